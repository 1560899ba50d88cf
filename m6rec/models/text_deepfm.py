"""DeepFM with language fields: the user's and the item's text, each encoded once by a frozen pretrained LM, projected
to the field-embedding width and used as two more fields beside the ID / attribute fields (FM pairs and MLP input).

The text fields are looked up by raw user / item id (`batch["user_ids"]`, `batch["item_ids"]`); an id without text
(absent from the tables) reads a zero encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m6rec.data.render import Templates, render_item_text, render_user_text
from m6rec.models.factorization import DeepFM, pairwise_interactions
from m6rec.models.text_encodings import cached_text_encodings
from m6rec.models.text_item_embedding import DEFAULT_ENCODER


def entity_encodings(table: Any, id_column: str, texts: list[str], encoder: str,
                     cache_dir: str | Path | None) -> torch.Tensor:  # fmt: skip
    """`[max id + 1, width]`: row `id` = the cached encoding of that row's text; ids absent from `table` are zeros."""
    encodings = cached_text_encodings(texts, encoder, cache_dir)
    ids = torch.tensor(table[id_column].to_numpy(), dtype=torch.long)
    out = torch.zeros(int(ids.max()) + 1, encodings.shape[1])
    out[ids] = encodings
    return out


class TextDeepFM(DeepFM):
    """DeepFM (m6rec.models.factorization) + a user-text and an item-text field: `Linear(encoding) -> embed_dim`
    vectors that take part in FM's pairwise term and the MLP like any field embedding, plus a linear term each."""

    def __init__(self, num_features: int, field_slots: Sequence[int], user_encodings: torch.Tensor,
                 item_encodings: torch.Tensor, embed_dim: int = 16, hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.2, init_std: float = 0.01, text_dropout: float = 0.0):  # fmt: skip
        super().__init__(num_features, field_slots, embed_dim, hidden, dropout, init_std)
        self.register_buffer("user_encodings", user_encodings.float())
        self.register_buffer("item_encodings", item_encodings.float())
        self.user_text = nn.Sequential(nn.Dropout(text_dropout), nn.Linear(user_encodings.shape[1], embed_dim + 1))
        self.item_text = nn.Sequential(nn.Dropout(text_dropout), nn.Linear(item_encodings.shape[1], embed_dim + 1))
        for layer in (self.user_text[1], self.item_text[1]):  # start as small as the ID embeddings
            nn.init.normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)
        first = self.mlp[0]  # the MLP now reads two more fields
        self.mlp[0] = nn.Linear(first.in_features + 2 * embed_dim, first.out_features)

    @classmethod
    def from_behaviour(cls, num_features: int, field_slots: Sequence[int], behaviour: Any,
                       encoder: str = DEFAULT_ENCODER, user_template: str = Templates.user,
                       item_template: str = Templates.candidate, cache_dir: str | Path | None = None,
                       **kwargs: Any) -> TextDeepFM:  # fmt: skip
        """Encodings of `behaviour.tables`' users ("A 24-year-old male technician") and items ("Heat (1995),
        Action, Crime, Thriller"), rendered with the templates and encoded once by `encoder` (cached)."""
        tables, templates = behaviour.tables, Templates(user=user_template, candidate=item_template)
        users = [render_user_text(row, templates) for row in tables.users.to_dict("records")]
        items = [render_item_text(row, templates) for row in tables.items.to_dict("records")]
        return cls(num_features, field_slots, entity_encodings(tables.users, "user_id", users, encoder, cache_dir),
                   entity_encodings(tables.items, "item_id", items, encoder, cache_dir), **kwargs)  # fmt: skip

    def _text(self, table: torch.Tensor, project: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        inside = ids < len(table)
        return project(table[ids.clamp(max=len(table) - 1)] * inside.unsqueeze(-1))

    def forward(self, features: torch.Tensor, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """One logit per row: FM over ID + text fields, plus the MLP over all field embeddings."""
        text = torch.stack([self._text(self.user_encodings, self.user_text, user_ids),
                            self._text(self.item_encodings, self.item_text, item_ids)], dim=1)  # fmt: skip
        vectors, linear = text[..., 1:], text[..., 0].sum(1)
        slots = torch.cat([self.fm.embeddings(features), vectors], dim=1)
        fm = self.fm.linear(features) + linear + pairwise_interactions(slots)
        deep = self.mlp(torch.cat([self.field_embeddings(features), vectors.flatten(1)], dim=1)).squeeze(-1)
        return fm + deep
