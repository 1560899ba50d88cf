"""DeepFM with language fields: the user's and the item's text, each encoded once by a frozen pretrained LM, projected
to the field-embedding width and used as two more fields beside the ID / attribute fields (FM pairs and MLP input).
With `profiles`, two more: the mean text encoding of the items the user liked, and of those they did not, in the
training rows. With `neighbours` = k, one more: the k highest similarities of the row's item to the user's liked, and
to their disliked, TRAIN items — cosine of the centred text encodings (content KNN) or of the items' TRAIN
co-occurrence (item-KNN, the classic analogue). A row never sees itself: whatever the mode, the features of (user,
item) are built from the TRAIN rows other than (user, item)'s own, so a training row gets what it would held out, and
a validation / test row whose pair also has TRAIN rows (sampled negatives) does not read them.

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
from m6rec.models.text_encodings import cached_text_encodings, encoder_parts
from m6rec.models.text_item_embedding import DEFAULT_ENCODER

SIMILARITIES = ("text", "cooccurrence")  # what TextDeepFM's neighbour field compares items by
NEIGHBOUR_TABLES_LIMIT = 4 * 2**30  # bytes: the dense neighbour tables are refused above this, before allocation


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
        neighbours: int = 0,
        similarity: str = "text",
        neighbour_counts: bool = False,
        label_free_padding: bool = False,
        text_parts: Sequence[int] | None = None,
        linear: bool = False,
    ):
        """`profiles`: (rows, 3) training (user id, item id, label) rows whose items' encodings make the profiles.
        `id_dropout`: in training, each row's `id_slots` (feature slots; 1 = the item with data.fields' default order)
        are emptied with this probability, each on its own, so the text must stand in for the ID (DropoutNet);
        with `id_dropout_below` > 0, only on rows whose item has fewer training rows than that (`item_counts`).
        `neighbours`: k > 0 adds the neighbour field (needs `profiles`); `similarity`: "text", "cooccurrence" or
        "text+cooccurrence" (both, side by side in the one field); `neighbour_counts`: the field also reads log(1 + the
        user's TRAIN disliked / liked row counts), the same for every row of the user (a user statistic, as a user
        bias is: a count that left the row's own row out would tell a training row's label).
        `label_free_padding`: a TRAIN row also drops its weakest neighbour in the other label class, so that with at
        most k items in a class the number of zero pads no longer tells the row's label (see _neighbour_similarities).
        `text_parts`: the widths of the encoders side by side in the encodings ("a+b"); the text similarity is taken
        in each part on its own (one block of the neighbour field per part). None: one part.
        `linear`: first-order terms only, logistic regression over the feature ids plus each text field's linear term
        (no FM pairs, no MLP): the neighbour field's term is the one that tells users apart."""
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"model.features.id_dropout: need 0 <= p < 1, got {id_dropout}")
        if id_dropout > 0 and any(not 0 <= slot < sum(field_slots) for slot in id_slots):
            raise ValueError(f"model.features.id_slots: need slots in [0, {sum(field_slots)}), got {list(id_slots)}")
        if id_dropout_below < 0 or (id_dropout_below > 0 and item_counts is None):
            raise ValueError(f"model.features.id_dropout_below: need >= 0 and item counts, got {id_dropout_below}")
        if neighbours < 0 or (neighbours > 0 and profiles is None):
            raise ValueError(f"model.features.neighbours: need >= 0, and > 0 needs profiles=true; got {neighbours}")
        if neighbour_counts and neighbours == 0:
            raise ValueError("model.features.neighbour_counts: needs model.features.neighbours > 0")
        if label_free_padding and neighbours == 0:
            raise ValueError("model.features.label_free_padding: needs model.features.neighbours > 0")
        kinds = similarity.split("+")
        if not kinds or any(kind not in SIMILARITIES for kind in kinds) or len(set(kinds)) < len(kinds):
            raise ValueError(
                f"model.features.similarity: {' | '.join(SIMILARITIES)} or both joined by +, got {similarity!r}"
            )
        self.text_parts = list(text_parts or [item_encodings.shape[1]])
        if sum(self.text_parts) != item_encodings.shape[1] or min(self.text_parts) < 1:
            raise ValueError(f"text_parts {self.text_parts}: need widths >= 1 summing to {item_encodings.shape[1]}")
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
            keys = (users * len(self.item_encodings) + items) * 2 + labels
            self.register_buffer("train_keys", keys.sort().values, persistent=False)  # for _own_rows
            self.profile_text = _projection(width, embed_dim, text_dropout, init_std)
        self.neighbours, self.similarity, self.neighbour_counts = neighbours, similarity, neighbour_counts
        self.label_free_padding, self.linear = label_free_padding, linear
        if neighbours > 0:
            self._build_neighbours(profiles.long(), num_users, kinds)
            blocks = len(kinds) + ("text" in kinds) * (len(self.text_parts) - 1)
            inputs = 2 * neighbours * blocks + 2 * neighbour_counts
            self.neighbour_field = _projection(inputs, embed_dim, 0.0, init_std)
        first = self.mlp[0]  # the MLP now reads the text fields too
        self.mlp[0] = nn.Linear(first.in_features + self.text_fields * embed_dim, first.out_features)
        if linear:  # dropped only now: the random stream (initial weights, then batches, dropout) is the full model's
            self.fm.embeddings, self.mlp = None, None

    @property
    def text_fields(self) -> int:
        return (4 if self.profiled else 2) + (self.neighbours > 0)

    def _build_neighbours(self, rows: torch.Tensor, num_users: int, kinds: list[str]) -> None:
        """Buffers for `_neighbour_similarities`: which TRAIN items each user liked / disliked, and per item its
        centred unit text encoding and / or its TRAIN users and its TRAIN co-occurrence counts with every item. They are
        dense (2·users·items bytes, co-occurrence 4·items·(users + items) more at its peak): refused in one line above
        `NEIGHBOUR_TABLES_LIMIT`."""
        users, items, labels = rows.T
        num_items = len(self.item_encodings)
        need = 2 * num_users * num_items + ("cooccurrence" in kinds) * 4 * num_items * (num_users + num_items)
        if need > NEIGHBOUR_TABLES_LIMIT:
            raise ValueError(
                f"model.features.neighbours: the dense neighbour tables need {need / 2**30:.1f} GiB for {num_users:,} "
                f"users x {num_items:,} items (limit {NEIGHBOUR_TABLES_LIMIT / 2**30:.0f} GiB); set "
                "model.features.neighbours=0 for a catalogue this size"
            )
        rated = torch.zeros(2, num_users, num_items, dtype=torch.bool)
        rated[labels, users, items] = True
        self.register_buffer("rated", rated, persistent=False)  # [disliked, liked] × user × item
        if "text" in kinds:
            seen = torch.zeros(num_items, dtype=torch.bool)
            seen[items] = True
            centred = self.item_encodings - self.item_encodings[seen].mean(0)
            units = [nn.functional.normalize(part, dim=1) for part in centred.split(self.text_parts, dim=1)]
            textless = (self.item_encodings == 0).all(1, keepdim=True)  # no text: no content neighbour (cosine 0)
            units = torch.cat(units, dim=1).masked_fill(textless, 0.0)
            self.register_buffer("item_units", units, persistent=False)  # unit in each part
        if "cooccurrence" in kinds:
            users_of = torch.zeros(num_items, num_users)  # item × user, 1 = a TRAIN row (built once, not kept)
            users_of[items, users] = 1.0
            self.register_buffer("item_sizes", users_of.sum(1), persistent=False)  # TRAIN users per item
            self.register_buffer("cooccurrence", users_of @ users_of.T, persistent=False)  # item × item, exact ints

    def _own_rows(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """(batch, 2): how many TRAIN rows each (user, item) pair has as disliked and as liked (1 for a training row's
        own label, 0 for a pair never in TRAIN)."""
        inside = (item_ids >= 0) & (item_ids < len(self.item_encodings))
        pairs = (user_ids * len(self.item_encodings) + item_ids.clamp(0, len(self.item_encodings) - 1)) * 2
        keys = torch.stack([pairs, pairs + 1], dim=1)
        found = torch.searchsorted(self.train_keys, keys, right=True) - torch.searchsorted(self.train_keys, keys)
        return (found * inside.unsqueeze(1)).to(self.profile_sums.dtype)

    def _neighbour_similarities(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """(batch, 2k per similarity): the k highest similarities of each row's item to the user's disliked, then
        liked, TRAIN items (the row's own item excluded), highest first; 0 where the user has fewer than k. With
        `neighbour_counts`, then log(1 + the user's TRAIN disliked and liked row counts), own rows included.
        Leaving a TRAIN row's own item out shortens its label's class by one, so a user with at most k items there
        shows one more zero pad when the row has that label; with `label_free_padding` the row also drops the weakest
        item of the other class, and both classes show n - 1 whatever the label (held-out rows show n)."""
        num_users, num_items = self.rated.shape[1:]
        users = user_ids.clamp(0, num_users - 1)
        items = item_ids.clamp(0, num_items - 1)
        candidates = self.rated[:, users].clone()  # (2, batch, items)
        candidates[:, torch.arange(len(items), device=items.device), items] = False
        inside = (user_ids >= 0) & (user_ids < num_users) & (item_ids >= 0) & (item_ids < num_items)
        candidates &= inside.view(1, -1, 1)
        k, out = min(self.neighbours, num_items), []
        weakest = torch.zeros(2, len(items), k, dtype=torch.bool, device=items.device)  # shown, but dropped
        if self.label_free_padding:
            other = self._own_rows(user_ids, item_ids).flip(1).T > 0  # (2, batch): the class opposite a TRAIN label
            sizes = candidates.sum(2)
            weakest = (torch.arange(k, device=items.device) == (sizes - 1).unsqueeze(-1)) & other.unsqueeze(-1)
        blocked = ~candidates
        for kind in self.similarity.split("+"):
            for sims in self._similarities(kind, users, items):
                top = sims.unsqueeze(0).masked_fill(blocked, float("-inf")).topk(k, dim=2).values
                top = nn.functional.pad(top.masked_fill(top.isinf() | weakest, 0.0), (0, self.neighbours - k))
                out += list(top)
        if self.neighbour_counts:  # not the candidates' count: that drops the row's own label class by one
            out.append((self.profile_counts[:, users].T * inside.unsqueeze(1)).to(out[0].dtype).log1p())
        return torch.cat(out, dim=1)

    def _similarities(self, kind: str, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        """[(batch, items)]: each row's item against every item, by `kind` (text: one per text part). Co-occurrence is
        exact only at the user's own TRAIN items (the neighbour candidates; elsewhere it may be off): the row's own user
        is taken out of its item's set, a no-op unless the pair has TRAIN rows."""
        if kind == "text":
            mine, every = self.item_units[items].split(self.text_parts, 1), self.item_units.split(self.text_parts, 1)
            return [rows @ table.T for rows, table in zip(mine, every, strict=True)]
        own = (self._own_rows(users, items).sum(1, keepdim=True) > 0).float()  # a TRAIN pair: its user taken out
        shared = self.cooccurrence[items] - own  # the user shares every item of theirs: float32 integers, exact bits
        return [shared / ((self.item_sizes[items].unsqueeze(1) - own) * self.item_sizes).clamp(min=1).sqrt()]

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
        item_parts = [entity_encodings(tables.items, "item_id", items, p, cache_dir) for p in encoder_parts(encoder)]
        return cls(
            num_features,
            field_slots,
            entity_encodings(tables.users, "user_id", users, encoder, cache_dir),
            torch.cat(item_parts, dim=1),
            profiles=rows,
            item_counts=counts,
            text_parts=[part.shape[1] for part in item_parts],
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

    def _profiles(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """(batch, 2, width) mean encodings of the user's disliked and liked TRAIN items, the row's own TRAIN rows (a
        training row's own label) taken out."""
        users = user_ids.clamp(max=self.profile_sums.shape[1] - 1) * (user_ids < self.profile_sums.shape[1])
        sums, counts = self.profile_sums[:, users].transpose(0, 1), self.profile_counts[:, users].T
        own = self._own_rows(user_ids, item_ids)  # (batch, 2)
        item = self.item_encodings[item_ids.clamp(0, len(self.item_encodings) - 1)]
        sums, counts = sums - own.unsqueeze(-1) * item.unsqueeze(1), counts - own
        return sums / counts.clamp(min=1).unsqueeze(-1)

    def forward(self, features: torch.Tensor, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """One logit per row: FM over ID + text fields, plus the MLP over all field embeddings (with `linear`, the
        first-order terms alone); the same in training and evaluation, except for dropout."""
        if self.training and self.id_dropout > 0:
            features = self._drop_ids(features, item_ids)
        fields = [
            self.user_text(by_id(self.user_encodings, user_ids)),
            self.item_text(by_id(self.item_encodings, item_ids)),
        ]
        if self.profiled:
            fields += list(self.profile_text(self._profiles(user_ids, item_ids)).unbind(1))
        if self.neighbours > 0:
            fields.append(self.neighbour_field(self._neighbour_similarities(user_ids, item_ids)))
        text = torch.stack(fields, dim=1)
        vectors, linear = text[..., 1:], text[..., 0].sum(1)
        if self.linear:
            return self.fm.linear(features) + linear
        slots = torch.cat([self.fm.embeddings(features), vectors], dim=1)
        fm = self.fm.linear(features) + linear + pairwise_interactions(slots)
        deep = self.mlp(torch.cat([self.field_embeddings(features), vectors.flatten(1)], dim=1)).squeeze(-1)
        return fm + deep
