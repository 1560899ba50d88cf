"""Per-event behaviour history drawn from the training split only (no validation/test leakage), vectorised: sample
j's history is a run of rows of the frame it came from (`RaggedHistory`), found with sorted arrays, not per-user loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from m6rec.data.ragged import ragged_ranges


@dataclass
class RaggedHistory:
    """Sample j's history is `rows[offsets[j]:offsets[j + 1]]` (oldest → newest), rows of the frame it came from."""

    offsets: np.ndarray
    rows: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def as_lists(self, items: np.ndarray, ratings: np.ndarray) -> list[list[tuple[int, float]]]:
        """The histories as [(item, rating), …] per sample (for small frames: one Python tuple per entry)."""
        pairs = list(zip(items[self.rows].tolist(), ratings[self.rows].tolist(), strict=True))
        return [pairs[a:b] for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True)]


def recent_training_rows(interactions: pd.DataFrame, is_train: np.ndarray, max_len: int) -> RaggedHistory:
    """Per row, the user's training rows strictly earlier in time, ordered by (time, item, row), the newest `max_len`.

    Ties in time are excluded (never "earlier"), so an event never sees itself or a simultaneous event.
    """
    n = len(interactions)
    if max_len <= 0 or n == 0:
        return RaggedHistory(np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    users = pd.factorize(interactions["user_id"].to_numpy())[0].astype(np.int64)
    times = np.unique(interactions["timestamp"].to_numpy(), return_inverse=True)[1].astype(np.int64).ravel()
    item_code, item_ids = pd.factorize(interactions["item_id"].to_numpy(), sort=True)  # codes in id order
    items = item_code.astype(np.int64)
    order_all = _sorted_rows(users, times, items)  # every row by (user, time, item, row)
    del items, item_code, item_ids
    train_sorted = np.asarray(is_train, bool)[order_all]
    before = np.cumsum(train_sorted) - train_sorted  # training rows strictly before each sorted position
    sorted_users = users[order_all]
    del users
    user_time = sorted_users * (int(times.max()) + 1) + times[order_all]
    del times
    end, first = np.empty(n, np.int64), np.empty(n, np.int64)
    end[order_all] = before[_group_starts(user_time)]  # training rows of earlier users, or of this user before now
    first[order_all] = before[_group_starts(sorted_users)]  # training rows of earlier users
    del before, user_time, sorted_users
    order = order_all[train_sorted].astype(np.int32 if n < 2**31 else np.int64)  # the training rows, sorted
    del order_all, train_sorted
    start = np.maximum(first, end - max_len)
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return RaggedHistory(offsets, order[ragged_ranges(start, lengths)])


def _sorted_rows(users: np.ndarray, times: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Row order by (user, time, item, row), from dense non-negative codes: one stable sort of a packed key when
    it fits in 63 bits, else a lexsort."""
    spans = [int(a.max(initial=0)) + 1 for a in (users, times, items)]
    if spans[0] * spans[1] * spans[2] < 2**63:
        return np.argsort((users * spans[1] + times) * spans[2] + items, kind="stable")
    return np.lexsort((items, times, users))


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, the first position holding the same value."""
    new = np.ones(len(sorted_keys), bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(len(sorted_keys)), 0))


def recent_training_history(
    interactions: pd.DataFrame, is_train: np.ndarray, max_len: int
) -> list[list[tuple[int, float]]]:
    """`recent_training_rows` as (item, rating) lists, newest last (for small frames and list-based callers)."""
    ragged = recent_training_rows(interactions, is_train, max_len)
    return ragged.as_lists(interactions["item_id"].to_numpy(), interactions["rating"].to_numpy())
