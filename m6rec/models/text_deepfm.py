"""DeepFM with language fields: the user's and the item's text, each encoded once by a frozen pretrained LM, projected
to the field-embedding width and used as two more fields beside the ID / attribute fields (FM pairs and MLP input).
With `profiles`, two more: the mean text encoding of the items the user liked, and of those they did not, in the
training rows (each training row's own item left out of its user's profile, so no row sees its own label).

The text fields are looked up by raw user / item id (`batch["user_ids"]`, `batch["item_ids"]`); an id without text
(absent from the tables) reads a zero encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from m6rec.data.protocol.splits import TRAIN
from m6rec.data.text.render import Templates, render_item_text, render_user_text
from m6rec.models.factorization import PADDING, DeepFM, pairwise_interactions
from m6rec.models.text_encodings import cached_text_encodings
from m6rec.models.text_item_embedding import DEFAULT_ENCODER


def entity_encodings(
    table: Any, id_column: str, texts: list[str], encoder: str, cache_dir: str | Path | None
) -> torch.Tensor:
    """`[max id + 1, width]`: row `id` = the cached encoding of that row's text; ids absent from `table` are zeros."""
    encodings = cached_text_encodings(texts, encoder, cache_dir)
    ids = torch.tensor(table[id_column].to_numpy(), dtype=torch.long)
    out = torch.zeros(int(ids.max()) + 1, encodings.shape[1])
    out[ids] = encodings
    return out


def by_id(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`table`'s rows for raw `ids`; an id past the table's end reads zeros."""
    inside = (ids < len(table)).view(-1, *[1] * (table.dim() - 1))
    return table[ids.clamp(max=len(table) - 1)] * inside


def _projection(width: int, dim: int, dropout: float, init_std: float) -> nn.Sequential:
    """Dropout, then a linear map to a field vector (`dim`) and a linear term (1), starting as small as an ID
    embedding (normal, std `init_std`)."""
    layer = nn.Linear(width, dim + 1)
    nn.init.normal_(layer.weight, std=init_std)
    nn.init.zeros_(layer.bias)
    return nn.Sequential(nn.Dropout(dropout), layer)


class TextDeepFM(DeepFM):
    """DeepFM (m6rec.models.factorization) + a user-text and an item-text field: `Linear(encoding) -> embed_dim`
    vectors that take part in FM's pairwise term and the MLP like any field embedding, plus a linear term each."""

    def __init__(
        self,
        num_features: int,
        field_slots: Sequence[int],
        user_encodings: torch.Tensor,
        item_encodings: torch.Tensor,
        embed_dim: int = 16,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.2,
        init_std: float = 0.01,
        text_dropout: float = 0.0,
        profiles: torch.Tensor | None = None,
        id_dropout: float = 0.0,
        id_slots: Sequence[int] = (1,),
        item_counts: torch.Tensor | None = None,
        id_dropout_below: int = 0,
    ):
        """`profiles`: (rows, 3) training (user id, item id, label) rows whose items' encodings make the profiles.
        `id_dropout`: in training, each row's `id_slots` (feature slots; 1 = the item with data.fields' default order)
        are emptied with this probability, each on its own, so the text must stand in for the ID (DropoutNet);
        with `id_dropout_below` > 0, only on rows whose item has fewer training rows than that (`item_counts`)."""
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"model.features.id_dropout: need 0 <= p < 1, got {id_dropout}")
        if id_dropout > 0 and any(not 0 <= slot < sum(field_slots) for slot in id_slots):
            raise ValueError(f"model.features.id_slots: need slots in [0, {sum(field_slots)}), got {list(id_slots)}")
        if id_dropout_below < 0 or (id_dropout_below > 0 and item_counts is None):
            raise ValueError(f"model.features.id_dropout_below: need >= 0 and item counts, got {id_dropout_below}")
        super().__init__(num_features, field_slots, embed_dim, hidden, dropout, init_std)
        self.id_dropout, self.id_slots, self.id_dropout_below = id_dropout, list(id_slots), id_dropout_below
        counts = torch.zeros(0, dtype=torch.long) if item_counts is None else item_counts.long()
        self.register_buffer("item_counts", counts, persistent=False)
        self.register_buffer("user_encodings", user_encodings.float())
        self.register_buffer("item_encodings", item_encodings.float())
        width, self.profiled = item_encodings.shape[1], profiles is not None
        self.user_text = _projection(user_encodings.shape[1], embed_dim, text_dropout, init_std)
        self.item_text = _projection(width, embed_dim, text_dropout, init_std)
        if profiles is not None:
            users, items, labels = profiles.long().T
            num_users = int(users.max()) + 1
            rows = labels * num_users + users  # index_add_ sums in a fixed order (index_put_ does not): same bits
            sums = torch.zeros(2 * num_users, width).index_add_(0, rows, self.item_encodings[items])
            counts = torch.zeros(2 * num_users).index_add_(0, rows, torch.ones(len(rows)))
            sums, counts = sums.view(2, num_users, width), counts.view(2, num_users)
            self.register_buffer("profile_sums", sums)  # [disliked, liked] × user × width
            self.register_buffer("profile_counts", counts)
            self.profile_text = _projection(width, embed_dim, text_dropout, init_std)
        first = self.mlp[0]  # the MLP now reads the text fields too
        self.mlp[0] = nn.Linear(first.in_features + self.text_fields * embed_dim, first.out_features)

    @property
    def text_fields(self) -> int:
        return 4 if self.profiled else 2

    @classmethod
    def from_behaviour(
        cls,
        num_features: int,
        field_slots: Sequence[int],
        behaviour: Any,
        encoder: str = DEFAULT_ENCODER,
        user_template: str = Templates.user,
        item_template: str = Templates.candidate,
        cache_dir: str | Path | None = None,
        profiles: bool = False,
        **kwargs: Any,
    ) -> TextDeepFM:
        """Encodings of `behaviour.tables`' users ("A 24-year-old male technician") and items ("Heat (1995),
        Action, Crime, Thriller"), rendered with the templates and encoded once by `encoder` (cached); `profiles`:
        the user profiles from `behaviour.samples()`' TRAIN rows, whose item counts also gate `id_dropout_below`."""
        tables, templates = behaviour.tables, Templates(user=user_template, candidate=item_template)
        users = [render_user_text(row, templates) for row in tables.users.to_dict("records")]
        items = [render_item_text(row, templates) for row in tables.items.to_dict("records")]
        rows = counts = None
        if profiles or kwargs.get("id_dropout_below", 0) > 0:
            train = behaviour.samples().query(f"split == {TRAIN}")
            train_rows = torch.tensor(train[["user_id", "item_id", "label"]].to_numpy(np.int64))
            rows = train_rows if profiles else None
            counts = torch.bincount(train_rows[:, 1], minlength=int(tables.items["item_id"].max()) + 1)
        return cls(
            num_features,
            field_slots,
            entity_encodings(tables.users, "user_id", users, encoder, cache_dir),
            entity_encodings(tables.items, "item_id", items, encoder, cache_dir),
            profiles=rows,
            item_counts=counts,
            **kwargs,
        )

    def _drop_ids(self, features: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """`features` with each row's `id_slots` emptied with probability `id_dropout` (only rare items' rows with
        `id_dropout_below`)."""
        drop = torch.rand(len(features), len(self.id_slots), device=features.device) < self.id_dropout
        if self.id_dropout_below > 0:
            drop &= (by_id(self.item_counts, item_ids) < self.id_dropout_below).unsqueeze(1)
        features = features.clone()
        features[:, self.id_slots] = features[:, self.id_slots].masked_fill(drop, PADDING)
        return features

    def _profiles(self, user_ids: torch.Tensor, item_ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(batch, 2, width) mean encodings of the user's disliked and liked TRAIN items; `labels` (training rows):
        the row's own item taken out of the profile its label put it in."""
        users = user_ids.clamp(max=self.profile_sums.shape[1] - 1) * (user_ids < self.profile_sums.shape[1])
        sums, counts = self.profile_sums[:, users].transpose(0, 1), self.profile_counts[:, users].T
        if labels is not None:
            own = nn.functional.one_hot(labels.long(), 2).to(sums.dtype)  # (batch, 2)
            item = self.item_encodings[item_ids.clamp(max=len(self.item_encodings) - 1)]
            sums, counts = sums - own.unsqueeze(-1) * item.unsqueeze(1), counts - own
        return sums / counts.clamp(min=1).unsqueeze(-1)

    def forward(
        self, features: torch.Tensor, user_ids: torch.Tensor, item_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One logit per row: FM over ID + text fields, plus the MLP over all field embeddings. `labels` only for
        training rows (their leave-one-out profiles)."""
        if self.training and self.id_dropout > 0:
            features = self._drop_ids(features, item_ids)
        fields = [
            self.user_text(by_id(self.user_encodings, user_ids)),
            self.item_text(by_id(self.item_encodings, item_ids)),
        ]
        if self.profiled:
            fields += list(self.profile_text(self._profiles(user_ids, item_ids, labels)).unbind(1))
        text = torch.stack(fields, dim=1)
        vectors, linear = text[..., 1:], text[..., 0].sum(1)
        slots = torch.cat([self.fm.embeddings(features), vectors], dim=1)
        fm = self.fm.linear(features) + linear + pairwise_interactions(slots)
        deep = self.mlp(torch.cat([self.field_embeddings(features), vectors.flatten(1)], dim=1)).squeeze(-1)
        return fm + deep
