"""Histories of evaluation events: everything the user did in the splits before the event's own split.

A validation event sees the user's TRAIN interactions, a test event TRAIN + VALID (as SASRec / RecBole build the test
sequence), a recommendation request (split code `ALL_SPLITS`) every interaction. These are exactly the items the
ranking masks, so a history never holds the event's own split: a test item never appears in any history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m6rec.data.protocol.history import RaggedHistory
from m6rec.data.protocol.splits import SPLIT_NAMES
from m6rec.data.ragged import ragged_ranges

ALL_SPLITS = len(SPLIT_NAMES)  # the split code of a request that follows every known interaction


def earlier_split_rows(
    frame: pd.DataFrame, split: np.ndarray, is_known: np.ndarray, rows: np.ndarray, max_len: int
) -> RaggedHistory:
    """Per row r of `rows`: the `is_known` rows of r's user whose split code is below `split[r]`, ordered by (time,
    split, item, row) so the newest is last and a same-second VALID interaction follows its TRAIN ones; the newest
    `max_len` of them."""
    rows = np.asarray(rows, np.int64)
    lengths, starts, pools = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64), []
    users = pd.factorize(frame["user_id"].to_numpy())[0].astype(np.int64)
    times, items = frame["timestamp"].to_numpy(), frame["item_id"].to_numpy()
    offset = 0
    for code in np.unique(split[rows]).tolist() if max_len > 0 else []:
        pool = np.flatnonzero(is_known & (split < code))
        pool = pool[np.lexsort((pool, items[pool], split[pool], times[pool], users[pool]))]
        mine = np.flatnonzero(split[rows] == code)
        end = np.searchsorted(users[pool], users[rows[mine]], side="right")
        start = np.maximum(np.searchsorted(users[pool], users[rows[mine]], side="left"), end - max_len)
        lengths[mine], starts[mine] = end - start, start + offset
        pools.append(pool)
        offset += len(pool)
    source = np.concatenate(pools) if pools else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return RaggedHistory(offsets, source[ragged_ranges(starts, lengths)].astype(np.int64))


def with_rows_replaced(base: RaggedHistory, rows: np.ndarray, new: RaggedHistory) -> RaggedHistory:
    """`base` with the histories of `rows` replaced by `new`'s (one per row, in order)."""
    lengths = base.lengths().copy()
    lengths[rows] = new.lengths()
    starts = base.offsets[:-1].copy()
    starts[rows] = new.offsets[:-1] + len(base.rows)
    source = np.concatenate([base.rows, new.rows]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return RaggedHistory(offsets, source[ragged_ranges(starts, lengths)].astype(np.int64))


def request_histories(
    interactions: pd.DataFrame, split: np.ndarray, user_id: int, item_ids, before: int, history_len: int
) -> tuple[pd.DataFrame, list[list[tuple[int, float]]]]:
    """The (user, item) request events that follow all of the user's interactions in the splits before `before`
    (`split`: each interaction's code), and each one's `history_len` most recent (item, rating) of those."""
    mine = (interactions["user_id"] == user_id).to_numpy()
    known = interactions[mine].assign(split=split[mine])
    query = pd.DataFrame(
        {"user_id": user_id, "item_id": list(item_ids), "rating": np.nan, "timestamp": 0, "split": before}
    )
    frame = pd.concat([known[query.columns], query], ignore_index=True)
    rows = np.arange(len(known), len(frame))
    observed = np.arange(len(frame)) < len(known)
    earlier = earlier_split_rows(frame, frame["split"].to_numpy(), observed, rows, history_len)
    return query, earlier.as_lists(frame["item_id"].to_numpy(), frame["rating"].to_numpy())
