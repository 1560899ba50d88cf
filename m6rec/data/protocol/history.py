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
    items = interactions["item_id"].to_numpy()
    train = np.flatnonzero(is_train).astype(np.int32 if n < 2**31 else np.int64)
    order = train[np.lexsort((items[train], times[train], users[train]))]
    del train
    span = int(times.max()) + 1
    keys = users * span + times
    sorted_keys = keys[order]
    end = np.searchsorted(sorted_keys, keys, side="left")  # first training row of the user at or after the time
    del keys
    first = np.searchsorted(sorted_keys, users * span, side="left")
    start = np.maximum(first, end - max_len)
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    del sorted_keys, end, first
    return RaggedHistory(offsets, order[ragged_ranges(start, lengths)])


def recent_training_history(
    interactions: pd.DataFrame, is_train: np.ndarray, max_len: int
) -> list[list[tuple[int, float]]]:
    """`recent_training_rows` as (item, rating) lists, newest last (for small frames and list-based callers)."""
    ragged = recent_training_rows(interactions, is_train, max_len)
    return ragged.as_lists(interactions["item_id"].to_numpy(), interactions["rating"].to_numpy())
