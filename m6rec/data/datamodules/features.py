"""FeatureDataModule: the rows of a BehaviourLogDataModule (same log, split codes and labels) as integer feature ids
per field, for the classic baselines (LR, FM, DeepFM, biased MF in m6rec.models.factorization)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.resumable import split_loader
from m6rec.data.protocol.splits import SPLIT_NAMES

FIELDS = ("user", "item", "age", "gender", "occupation", "genres", "year")  # the default fields
OPTIONAL_FIELDS = ("title_words",)  # on request only (data.fields)
MULTI_VALUED = ("genres", "title_words")  # one slot per value, multi-hot
USER_FIELDS, ITEM_FIELDS = ("user", "age", "gender", "occupation"), ("item", "genres", "year", "title_words")
TITLE_WORD_MIN_ITEMS = 2  # a word in one title only would be a second item id
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+


class FeatureDataset(Dataset):
    """Equal-length tensors by name; a list of row indices fetches a whole batch at once (`__getitems__`)."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["labels"])

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        return {name: values[row] for name, values in self.columns.items()}

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(rows, dtype=torch.long)
        return {name: values[index] for name, values in self.columns.items()}


def _whole_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataLoader collate for `FeatureDataset.__getitems__`, which already returns the batch."""
    return batch


def age_group(age: pd.Series) -> pd.Series:
    """MovieLens-1M's age group label ("<18", "18-24", …, "56+") of each age (missing stays missing)."""
    labels = ["<18", *(f"{lo}-{hi - 1}" for lo, hi in zip(AGE_EDGES, AGE_EDGES[1:], strict=False)), "56+"]
    groups = pd.cut(age, [-np.inf, *AGE_EDGES, np.inf], right=False, labels=labels)
    return groups.astype(object).where(age.notna(), None)


def title_words(titles: pd.Series, min_items: int = TITLE_WORD_MIN_ITEMS) -> pd.Series:
    """Each title's distinct lower-cased words (runs of Unicode letters and digits, inner apostrophes kept), in order,
    keeping the words that occur in at least `min_items` titles of `titles` (item metadata: no interactions)."""
    words = titles.fillna("").astype(str).str.lower().str.findall(r"[^\W_]+(?:'[^\W_]+)*")
    words = words.map(lambda w: list(dict.fromkeys(w)))
    counts = words.explode().dropna().value_counts()
    kept = set(counts.index[counts >= min_items])
    return words.map(lambda w: [x for x in w if x in kept])


def decade(year: pd.Series) -> pd.Series:
    """Release decade ("1990s") of four-digit year strings; "" (unknown year) → missing."""
    known = year.fillna("").str.fullmatch(r"\d{4}")
    return (year.str[:3] + "0s").where(known, None)


class FeatureDataModule(L.LightningDataModule):
    """`behaviour`'s scored events (its `samples()`: log, `split_codes()` and label rule, row for row) with one
    integer feature id per field slot: `fields` from user id, item id, age group, gender, occupation, genres (one slot
    per genre, multi-hot), release decade and, on request, `title_words` (multi-hot words shared by >= 2 titles).

    Vocabularies come from the user and item tables (metadata, no interactions). Feature ids are global: id 0 is an
    empty slot, then each field's block in order, starting with its "unknown" id (a user or item absent from the
    tables). Batches: `features` (batch, slots), `labels`, `ratings`, `user_ids`, `item_ids`.
    """

    def __init__(
        self,
        behaviour: BehaviourLogDataModule,
        fields: Sequence[str] = FIELDS,
        batch_size: int = 1024,
        eval_batch_size: int = 8192,
        num_workers: int = 0,
    ):
        super().__init__()
        fields = [str(f) for f in fields]
        unknown = [f for f in fields if f not in (*FIELDS, *OPTIONAL_FIELDS)]
        if unknown or not fields or len(set(fields)) != len(fields):
            raise ValueError(f"data.fields: need distinct names from {[*FIELDS, *OPTIONAL_FIELDS]}, got {fields}")
        self.save_hyperparameters(ignore=["behaviour"])
        self.behaviour = behaviour
        self.datasets: dict[str, FeatureDataset] = {}
        self.stats: dict[str, Any] = {}

    def prepare_data(self) -> None:
        self.behaviour.prepare_data()

    # ------------------------------------------------------------------ vocabularies
    @cached_property
    def entity_values(self) -> dict[str, pd.DataFrame]:
        """Each field's raw value(s) per user ("user" frame, indexed by user id) and per item ("item" frame)."""
        tables, inter = self.behaviour.tables, self.behaviour.interactions
        user_ids = np.union1d(tables.users["user_id"].to_numpy(), inter["user_id"].to_numpy())
        item_ids = np.union1d(tables.items["item_id"].to_numpy(), inter["item_id"].to_numpy())
        users = tables.users.set_index("user_id").reindex(user_ids)
        items = tables.items.set_index("item_id").reindex(item_ids)
        user_frame = pd.DataFrame({"user": user_ids}, index=user_ids)
        if len(tables.users):
            user_frame = user_frame.assign(
                age=age_group(users["age"]), gender=users["gender"], occupation=users["occupation"]
            )
        genres = items["genres"].fillna("").str.split("|").map(lambda g: [x for x in g if x])
        titles = items["title"] if "title" in items else pd.Series("", index=items.index)
        words = title_words(titles)
        item_frame = pd.DataFrame(
            {"item": item_ids, "genres": genres, "year": decade(items["year"]), "title_words": words}, index=item_ids
        )
        return {"user": user_frame, "item": item_frame}

    @cached_property
    def vocabularies(self) -> dict[str, list[Any]]:
        """The sorted known values of each field (the tables'); a field's local id is 1 + position, 0 = unknown."""
        frames = self.entity_values
        vocab = {}
        for field in self.hparams.fields:
            frame = frames["user" if field in USER_FIELDS else "item"]
            column = frame[field] if field in frame else pd.Series([], dtype=object)
            values = column.explode() if field in MULTI_VALUED else column
            vocab[field] = sorted(values.dropna().unique().tolist())
        return vocab

    def model_inputs(self) -> dict[str, Any]:
        """What a feature model is built for (m6rec.build): the number of feature ids and each field's slots."""
        return {"num_features": self.num_features, "field_slots": self.field_slots}

    @cached_property
    def field_slots(self) -> list[int]:
        """Slots per field in `fields` order: 1, or the most values any item has for a multi-valued field (genres)."""
        items = self.entity_values["item"]
        return [max(1, int(items[f].map(len).max())) if f in MULTI_VALUED else 1 for f in self.hparams.fields]

    @cached_property
    def offsets(self) -> dict[str, int]:
        """The global id of each field's "unknown" value (its block's first id); global id 0 is the empty slot."""
        offsets, start = {}, 1
        for field, values in self.vocabularies.items():
            offsets[field], start = start, start + 1 + len(values)
        return offsets

    @property
    def num_features(self) -> int:
        """How many feature ids there are (the embedding table size), the empty slot included."""
        return 1 + sum(1 + len(values) for values in self.vocabularies.values())

    def encode(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """(rows, slots) int64 global feature ids of (user, item) rows, fields in `fields` order."""
        frames, columns = self.entity_values, []
        for field, slots in zip(self.hparams.fields, self.field_slots, strict=True):
            entity = "user" if field in USER_FIELDS else "item"
            ids = user_ids if entity == "user" else item_ids
            frame = frames[entity]
            values = frame[field].reindex(ids) if field in frame else pd.Series([None] * len(ids), dtype=object)
            if field in MULTI_VALUED:  # multi-hot: the item's values, then empty slots
                ragged = values.map(lambda g: g if isinstance(g, list) else [])
                nth = [ragged.map(lambda g, s=slot: g[s] if s < len(g) else None) for slot in range(slots)]
                slot_ids = [np.where(v.notna().to_numpy(), self.offsets[field] + self._codes(field, v), 0) for v in nth]
                columns.append(np.stack(slot_ids, axis=1))
            else:
                columns.append((self.offsets[field] + self._codes(field, values))[:, None])
        return np.concatenate(columns, axis=1)

    def _codes(self, field: str, values: pd.Series) -> np.ndarray:
        """Local ids (1 + position in the field's vocabulary; 0 = missing or unknown) of `values`, as int64."""
        codes = pd.Series(values.to_numpy(), dtype=pd.CategoricalDtype(self.vocabularies[field])).cat.codes
        return codes.to_numpy().astype(np.int64) + 1

    # ------------------------------------------------------------------ samples
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        samples = self.behaviour.samples()
        users, items = samples["user_id"].to_numpy(np.int64), samples["item_id"].to_numpy(np.int64)
        columns = {
            "features": torch.from_numpy(self.encode(users, items)),
            "labels": torch.tensor(samples["label"].to_numpy(np.float32)),
            "ratings": torch.tensor(samples["rating"].to_numpy(np.float32)),
            "user_ids": torch.tensor(users),
            "item_ids": torch.tensor(items),
        }
        split = samples["split"].to_numpy()
        self.stats = {
            "rows": len(samples),
            "fields": list(self.hparams.fields),
            "field_slots": self.field_slots,
            "num_features": self.num_features,
            "fingerprint": self.behaviour.fingerprint,
        }
        for code, name in SPLIT_NAMES.items():
            rows = torch.from_numpy(np.flatnonzero(split == code))
            self.datasets[name] = FeatureDataset({key: values[rows] for key, values in columns.items()})
            self.stats[f"{name}_size"] = len(rows)
            self.stats[f"{name}_positive_rate"] = float(columns["labels"][rows].mean()) if len(rows) else 0.0

    def _loader(self, name: str, train: bool) -> DataLoader:
        hp = self.hparams
        return split_loader(
            self.datasets[name], train, self.trainer, hp.batch_size, hp.eval_batch_size, hp.num_workers, _whole_batch
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
