"""Item embeddings that read language: a projection of a frozen LM's encoding of each item's text, alone or added
to a learned ID embedding (UniSRec / RecFormer / LLaRA style).

Both follow the item-embedding interface of the sequence models: `forward(item_ids) -> [..., dim]` and
`catalogue() -> [num_items, dim]` (row i = item index i; row `padding_idx` is all zeros). The text-only one has no
per-item parameter, so it gives an item never seen in training the same kind of vector as any other.
"""

from __future__ import annotations

import torch
from torch import nn


class TextItemEmbedding(nn.Module):
    """Item vector = MLP(centred LM encoding of the item's text); `encodings[i]` is item index i's encoding."""

    def __init__(self, encodings: torch.Tensor, dim: int, hidden: int | None = None, dropout: float = 0.0,
                 padding_idx: int | None = 0):  # fmt: skip
        super().__init__()
        if encodings.dim() != 2:
            raise ValueError(f"TextItemEmbedding: encodings must be [num_items, width], got {tuple(encodings.shape)}")
        encodings = encodings.float()
        keep = torch.ones(len(encodings), dtype=torch.bool)
        if padding_idx is not None:
            keep[padding_idx] = False
        centred = encodings - encodings[keep].mean(0)  # the catalogue's mean says nothing about one item
        self.register_buffer("encodings", centred * keep.unsqueeze(1))
        self.register_buffer("keep", keep.float().unsqueeze(1))
        width = encodings.shape[1]
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        layers += [nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim)] if hidden else [nn.Linear(width, dim)]
        self.project = nn.Sequential(*layers)
        self.num_items, self.dim = len(encodings), dim

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """`[...]` item indices → `[..., dim]` (zeros at the padding index)."""
        return self.project(self.encodings[item_ids]) * self.keep[item_ids]

    def catalogue(self) -> torch.Tensor:
        """Every item's vector, `[num_items, dim]`."""
        return self.project(self.encodings) * self.keep


class HybridItemEmbedding(nn.Module):
    """Item vector = a learned ID embedding + `TextItemEmbedding` of the item's text (the sum, both `dim` wide)."""

    def __init__(self, encodings: torch.Tensor, dim: int, hidden: int | None = None, dropout: float = 0.0,
                 padding_idx: int | None = 0, id_init_std: float = 0.02):  # fmt: skip
        super().__init__()
        self.text = TextItemEmbedding(encodings, dim, hidden=hidden, dropout=dropout, padding_idx=padding_idx)
        self.ids = nn.Embedding(len(encodings), dim, padding_idx=padding_idx)
        nn.init.normal_(self.ids.weight, std=id_init_std)
        if padding_idx is not None:
            with torch.no_grad():
                self.ids.weight[padding_idx].zero_()
        self.num_items, self.dim = len(encodings), dim

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """`[...]` item indices → `[..., dim]` (zeros at the padding index)."""
        return self.ids(item_ids) + self.text(item_ids)

    def catalogue(self) -> torch.Tensor:
        """Every item's vector, `[num_items, dim]`."""
        return self.ids.weight + self.text.catalogue()
