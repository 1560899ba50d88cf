"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's item sequence, learned positions, the
next item scored against every catalogue item with the (shared) item embeddings, cross-entropy over the catalogue."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m6rec.data.datamodules.id_sequences import Catalogue


class SASRec(nn.Module):
    """Pre-norm transformer blocks (`layers`, `heads`, feed-forward `ffn`, GELU, `dropout`) over the newest
    `max_len` items (left-padded, index 0; the newest item always at the last position). `item_embedding` builds the
    input/output item vectors (m6rec.models.item_embedding's contract)."""

    def __init__(
        self,
        catalogue: Catalogue,
        item_embedding: Callable[..., nn.Module],
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        ffn: int = 256,
        dropout: float = 0.2,
        max_len: int = 200,
    ):
        super().__init__()
        self.items = item_embedding(catalogue=catalogue, dim=hidden)
        self.positions = nn.Embedding(max_len, hidden)
        nn.init.normal_(self.positions.weight, std=0.02)
        block = nn.TransformerEncoderLayer(
            hidden, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.heads, self.max_len, self.scale = heads, max_len, math.sqrt(hidden)

    def encode(self, sequence: Tensor) -> Tensor:
        """Hidden state (B, L, d) after each position of the left-padded `sequence` (B, L ≤ max_len)."""
        length = sequence.size(1)
        positions = torch.arange(self.max_len - length, self.max_len, device=sequence.device)
        x = self.dropout(self.items(sequence) * self.scale + self.positions(positions))
        padding = sequence == 0
        blocked = torch.ones(length, length, dtype=torch.bool, device=sequence.device).triu(1)[None] | padding[:, None]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=sequence.device)  # padding sees itself: no NaN
        x = x.masked_fill(padding[..., None], 0.0)
        return self.norm(self.blocks(x, mask=blocked.repeat_interleave(self.heads, dim=0)))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy of every next item of the training windows `batch["sequence"]` over all items."""
        sequence = batch["sequence"][:, -(self.max_len + 1) :]
        inputs, targets = sequence[:, :-1], sequence[:, 1:]
        logits = self.encode(inputs) @ self.items.all_items().T
        labels = torch.where(inputs > 0, targets - 1, -100)  # no prediction from an empty history
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        """The hidden state after each user's newest history item (B, d)."""
        return self.encode(batch["history"][:, -self.max_len :])[:, -1]

    def item_vectors(self) -> Tensor:
        return self.items.all_items()
