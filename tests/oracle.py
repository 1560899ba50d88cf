"""Slow, obviously-correct references the vectorised library code is checked against (never imported by m6rec)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import prompt_segments


def encode_one(encoder: SegmentEncoder, user_text: str, pronoun: str, history: list[str], candidate: str) -> np.ndarray:
    """One prompt's token ids, segment by segment (the encoder that `encode_batch` replaced): estimate how many of the
    oldest history items must go, then verify exactly, dropping more if needed."""
    t = encoder.templates
    budget = encoder.max_length - len(encoder.prefix) - len(encoder.suffix)

    def ids(kept: list[str]) -> list[int]:
        return [i for s in prompt_segments(user_text, pronoun, kept, candidate, t) for i in encoder.ids(s)]

    tokens, first = ids(history), 0
    excess = len(tokens) - budget
    while excess > 0 and first < len(history):
        excess -= len(encoder.ids(" " + history[first])) + len(encoder.ids(t.history_sep.rstrip()))
        first += 1
    for start in range(first, len(history) + 1):
        tokens = ids(history[start:])
        if len(tokens) <= budget:
            return np.asarray(encoder.prefix + tokens + encoder.suffix, dtype=np.int32)
    raise ValueError(
        f"data.max_length={encoder.max_length} is too small: the prompt for candidate {candidate!r} "
        f"needs {len(tokens) + len(encoder.prefix) + len(encoder.suffix)} tokens with no history at all"
    )


def training_history_by_loop(interactions: pd.DataFrame, is_train: np.ndarray, max_len: int) -> list[list]:
    """Per row, the user's training (item, rating) strictly earlier in time, ordered by (time, item, row), newest
    `max_len`: a loop over users and rows."""
    histories: list[list] = [[] for _ in range(len(interactions))]
    rows_of: dict = {}
    for row, user in enumerate(interactions["user_id"].tolist()):
        rows_of.setdefault(user, []).append(row)
    times, items = interactions["timestamp"].tolist(), interactions["item_id"].tolist()
    ratings = interactions["rating"].tolist()
    for rows in rows_of.values():
        train = sorted((times[r], items[r], r) for r in rows if is_train[r])
        for row in rows:
            earlier = [(items[r], ratings[r]) for t, _, r in train if t < times[row]]
            histories[row] = earlier[max(0, len(earlier) - max_len) :] if max_len > 0 else []
    return histories
