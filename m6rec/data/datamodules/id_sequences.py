"""SequenceDataModule: a behaviour log as item-id sequences for ID-based recommenders (Pop, BPR-MF, EASE, SASRec).

Same log, k-core / implicit settings and split codes as NextItemDataModule (it is one, minus the text): per user the
item indices in split order (TRAIN, then VALID, then TEST; inside a split by time, same-second ties by
`data.tie_break` as the loo split breaks them). Items are
indexed 1..N in sorted raw-id order (`catalogue.item_ids[i - 1]` is index i's raw id); 0 is padding.

Training rows (`train_rows`): "windows" = windows of at most `max_seq_len + 1` items of each user's TRAIN sequence
(newest window last; windows overlap by one item, so every training item except the user's first is a next-item target
exactly once); "pairs" = one row per TRAIN interaction, its item as a one-item `sequence` (shuffled (user, item)
pairs, each seen once per epoch: what a pairwise model such as BPR-MF trains on).
Validation / test rows: one per user with an interaction in that split: `targets` = those items, `history` = the
user's items of the earlier splits (TRAIN at validation, TRAIN + VALID at test; oldest first, not truncated),
`excluded` = the items seen before the target (the same sets as NextItemDataModule's `excluded`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from m6rec.data.datamodules.next_item import NextItemDataModule
from m6rec.data.datamodules.resumable import split_loader
from m6rec.data.protocol.splits import SPLIT_NAMES, TEST, TRAIN, VALID, loo_order

TRAIN_ROWS = ("windows", "pairs")
LEFT_PADDED = ("history", "sequence")  # item sequences, newest last (padding 0 on the left)
RIGHT_PADDED = ("targets", "excluded")  # item sets (padding -1 on the right)


class Catalogue:
    """The items a model can score: index i (1..N) is raw item `item_ids[i - 1]` with metadata `items.iloc[i - 1]`
    (title, genres, …); `num_users` users are indexed 0..num_users - 1 in sorted raw-id order; `train_counts[i]` =
    item i's TRAIN interactions (index 0 = padding), set by the datamodule that split the log, else None. (A plain
    class, not a dataclass: Hydra's instantiate would turn a dataclass keyword argument into a config node.)"""

    def __init__(self, item_ids: np.ndarray, items: pd.DataFrame, num_users: int):
        self.item_ids, self.items, self.num_users = item_ids, items, num_users
        self.train_counts: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


class RowsDataset(Dataset):
    """A list of dict rows (numpy arrays and ints)."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def sequence_collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack `user`; left-pad `history` / `sequence` with 0, right-pad `targets` / `excluded` with -1 (LongTensors)."""
    out = {"user": torch.tensor([row["user"] for row in batch], dtype=torch.long)}
    for key in (*LEFT_PADDED, *RIGHT_PADDED):
        if key not in batch[0]:
            continue
        longest = max(max(len(row[key]) for row in batch), 1)
        padded = torch.full((len(batch), longest), 0 if key in LEFT_PADDED else -1, dtype=torch.long)
        for r, row in enumerate(batch):
            values = torch.as_tensor(np.asarray(row[key], dtype=np.int64))
            if key in LEFT_PADDED:
                padded[r, longest - len(values) :] = values
            else:
                padded[r, : len(values)] = values
        out[key] = padded
    return out


def windows(sequence: np.ndarray, size: int) -> list[np.ndarray]:
    """`sequence` cut from the end into windows of at most `size` items that overlap by one (each item but the first
    follows its predecessor inside some window); a sequence of < 2 items gives no window."""
    out, end = [], len(sequence)
    while end >= 2:
        start = max(0, end - size)
        out.append(sequence[start:end])
        end = start + 1
    return out[::-1]


class SequenceDataModule(NextItemDataModule):
    """NextItemDataModule's log and split as item-index sequences (see the module docstring); `max_seq_len` = the
    longest training input (a window holds `max_seq_len + 1` items: inputs and their next items); `train_rows`
    "windows" | "pairs" (see the module docstring)."""

    def __init__(self, max_seq_len: int = 200, train_rows: str = "windows", **kwargs: Any):
        if max_seq_len < 1:
            raise ValueError(f"data.max_seq_len: must be >= 1, got {max_seq_len}")
        if train_rows not in TRAIN_ROWS:
            raise ValueError(f"data.train_rows: choose from {list(TRAIN_ROWS)}, got {train_rows!r}")
        settings = kwargs
        kwargs = {}  # Lightning's hparams merge every __init__ frame: let the parent's normalised values stand
        super().__init__(**settings)
        self.max_seq_len, self.train_rows = int(max_seq_len), train_rows
        self.history_splits = {VALID: (TRAIN,), TEST: (TRAIN, VALID)}  # the splits a query's history is drawn from

    def model_inputs(self) -> dict[str, Catalogue]:
        """What an ID model is built for (m6rec.build): this log's item catalogue, with its TRAIN counts."""
        catalogue = self.catalogue
        catalogue.train_counts = np.bincount(self.train_pairs()[1].numpy(), minlength=catalogue.num_items + 1)
        return {"catalogue": catalogue}

    @cached_property
    def catalogue(self) -> Catalogue:
        """Every item of the (k-cored) log, sorted by raw id, with its metadata row."""
        item_ids = np.unique(self.interactions["item_id"].to_numpy()).astype(np.int64)
        meta = self.tables.items.set_index("item_id").reindex(item_ids).reset_index()
        return Catalogue(item_ids, meta, int(self.interactions["user_id"].nunique()))

    @cached_property
    def user_ids(self) -> np.ndarray:
        """Every user of the (k-cored) log, sorted by raw id: user index u is raw user `user_ids[u]`."""
        return np.unique(self.interactions["user_id"].to_numpy()).astype(np.int64)

    @cached_property
    def indexed(self) -> pd.DataFrame:
        """The log as (user index, item index, split code), sorted by user, split, then `loo_order` (time, ties by
        `data.tie_break`, as the loo split orders them)."""
        inter, hp = self.interactions, self.hparams
        position = np.empty(len(inter), np.int64)
        position[loo_order(inter, hp.tie_break, hp.split_seed)] = np.arange(len(inter))
        frame = pd.DataFrame(
            {
                "user": np.searchsorted(self.user_ids, inter["user_id"].to_numpy()),
                "item": np.searchsorted(self.catalogue.item_ids, inter["item_id"].to_numpy()) + 1,
                "split": self.split_codes(),
                "position": position,
            }
        )
        return frame.sort_values(["user", "split", "position"], kind="stable").reset_index(drop=True)

    def train_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user index, item index) of every TRAIN interaction: what closed-form models (Pop, EASE) fit on."""
        train = self.indexed[self.indexed["split"] == TRAIN]
        return torch.tensor(train["user"].to_numpy()), torch.tensor(train["item"].to_numpy())

    def ranking_items(self, stage: str) -> np.ndarray:
        """Item indices ranked at `stage` ("val" | "test"): the whole catalogue."""
        return np.arange(1, self.catalogue.num_items + 1, dtype=np.int64)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frame = self.indexed
        per_user = {u: (g["item"].to_numpy(), g["split"].to_numpy()) for u, g in frame.groupby("user", sort=True)}
        train_rows = [
            {"user": u, "sequence": w}
            for u, (items, split) in per_user.items()
            for w in self._train_sequences(items[split == TRAIN])
        ]
        self.datasets["train"] = RowsDataset(train_rows)
        for code in (VALID, TEST):
            self.datasets[SPLIT_NAMES[code]] = RowsDataset(self._queries(per_user, code))
        self.stats = {
            **self.split_statistics(np.ones(len(frame), np.float32), frame["split"].to_numpy()),
            "catalogue": self.catalogue.num_items,
            f"train_{self.train_rows}": len(train_rows),
        }

    def _train_sequences(self, items: np.ndarray) -> list[np.ndarray]:
        """A user's training rows from its TRAIN items: windows, or each item alone (`train_rows`)."""
        return windows(items, self.max_seq_len + 1) if self.train_rows == "windows" else list(items[:, None])

    def _queries(self, per_user: dict[int, tuple[np.ndarray, np.ndarray]], code: int) -> list[dict[str, Any]]:
        """One query per user with items in split `code`: targets, history (`history_splits`), excluded items."""
        rows = []
        for user, (items, split) in per_user.items():
            targets = np.unique(items[split == code])  # an item the user repeats is one relevant item
            if not len(targets):
                continue
            history = items[np.isin(split, self.history_splits[code])]
            seen = np.setdiff1d(items[split < code], targets)
            rows.append({"user": user, "history": history, "targets": targets, "excluded": seen})
        return rows

    def _loader(self, name: str, train: bool) -> DataLoader:
        hp = self.hparams
        return split_loader(
            self.datasets[name],
            train,
            self.trainer,
            hp.batch_size,
            hp.eval_batch_size,
            hp.num_workers,
            sequence_collate,
        )

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        return sequence_collate
