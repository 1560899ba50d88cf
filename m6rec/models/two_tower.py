"""TwoTower: a user tower and an item tower, each backbone → pooled hidden state → Linear → L2-normalised vector."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from m6rec.models.scorer import TextScorer


class TwoTower(nn.Module):
    """`shared=True`: one backbone reads queries and items (M6-Rec's single LM), each tower with its own projection;
    `shared=False`: the item tower gets its own copy of the backbone."""

    def __init__(
        self, backbone: nn.Module, hidden_size: int, dim: int = 128, pooling: str = "last", shared: bool = True
    ):
        super().__init__()
        if dim < 2:
            raise ValueError(f"task.embedding_dim: must be >= 2, got {dim}")
        self.query = TextScorer(backbone, hidden_size, num_outputs=dim, pooling=pooling)
        self.item = TextScorer(backbone if shared else copy.deepcopy(backbone), hidden_size, dim, pooling=pooling)

    def embed_queries(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.query(input_ids, attention_mask), dim=-1)

    def embed_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item(input_ids, attention_mask), dim=-1)
