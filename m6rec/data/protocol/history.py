"""Per-event behaviour history drawn from the training split only (no validation/test leakage)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def recent_training_history(
    interactions: pd.DataFrame, is_train: np.ndarray, max_len: int
) -> list[list[tuple[int, float]]]:
    """For every row, the user's training interactions strictly earlier in time, newest last, at most `max_len`.

    Ties in time are excluded (never "earlier"), so an event never sees itself or a simultaneous event.
    """
    users = interactions["user_id"].to_numpy()
    times = interactions["timestamp"].to_numpy()
    items = interactions["item_id"].to_numpy()
    ratings = interactions["rating"].to_numpy()
    train_rows = np.flatnonzero(is_train)
    # Stable sort by (user, time, item) so equal timestamps have a fixed order.
    train_rows = train_rows[np.lexsort((items[train_rows], times[train_rows], users[train_rows]))]
    histories: list[list[tuple[int, float]]] = [[] for _ in range(len(interactions))]
    if max_len <= 0:
        return histories
    by_user = pd.Series(np.arange(len(interactions))).groupby(users).indices
    train_users = users[train_rows]
    starts = np.searchsorted(train_users, np.unique(users), side="left")
    ends = np.searchsorted(train_users, np.unique(users), side="right")
    for user, lo, hi in zip(np.unique(users), starts, ends, strict=True):
        rows = train_rows[lo:hi]
        user_times = times[rows]
        pairs = list(zip(items[rows].tolist(), ratings[rows].tolist(), strict=True))
        for row in by_user[user]:
            pos = int(np.searchsorted(user_times, times[row], side="left"))
            histories[row] = pairs[max(0, pos - max_len) : pos]
    return histories
