"""Item input embeddings for ID-based sequence models: `forward(item indices) -> vectors` plus `all_items()`.

The contract (so a text or hybrid embedding can replace the ID one through `model.item_embedding`): built as
`factory(catalogue=Catalogue, dim=int)`; `forward(LongTensor[...]) -> Tensor[..., dim]` with index 0 = padding (a
zero vector) and i = `catalogue.item_ids[i - 1]`; `all_items() -> Tensor[num_items, dim]`, row i - 1 = item i
(what the model scores a sequence against).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from m6rec.data.id_sequences import Catalogue


class IDEmbedding(nn.Module):
    """One learned vector per item id (normal, std `init_std`), padding row zero."""

    def __init__(self, catalogue: Catalogue, dim: int, init_std: float = 0.02):
        super().__init__()
        self.embedding = nn.Embedding(catalogue.num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, item_ids: Tensor) -> Tensor:
        return self.embedding(item_ids)

    def all_items(self) -> Tensor:
        return self.embedding.weight[1:]
