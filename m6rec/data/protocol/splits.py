"""Splitting a behaviour log into train / valid / test.

Every splitter returns an np.int8 array of codes (TRAIN/VALID/TEST) aligned with the rows it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}
TIE_BREAKS = ("row", "item", "random")  # `data.tie_break`: how `loo` orders a user's same-second interactions


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    """Return `ratios` as a float array of three non-negative numbers summing to 1, else raise ValueError."""
    try:
        arr = np.asarray(ratios, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (3,) or (arr < 0).any() or not np.isclose(arr.sum(), 1):
        shown = ratios if arr is None else arr.tolist()
        raise ValueError(f"data.split_ratios: need three non-negative numbers summing to 1, got {shown}")
    return arr


def _columns(interactions: pd.DataFrame, *names: str) -> list[np.ndarray]:
    """Return the named columns of a non-empty interactions frame as arrays, else raise ValueError."""
    if len(interactions) == 0:
        raise ValueError("data.split: no interactions to split")
    missing = [c for c in names if c not in interactions.columns]
    if missing:
        raise ValueError(f"data.split: interactions lack columns {missing}")
    return [interactions[c].to_numpy() for c in names]


def random_split(n: int, ratios: tuple[float, float, float] | list[float], seed: int) -> np.ndarray:
    """Assign each of `n` interactions to TRAIN/VALID/TEST at random with the given ratios (the CTR protocol)."""
    ratios = _check_ratios(ratios)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(ratios[0] * n))
    n_valid = int(round(ratios[1] * n))
    split = np.empty(n, dtype=np.int8)
    split[order[:n_train]] = TRAIN
    split[order[n_train : n_train + n_valid]] = VALID
    split[order[n_train + n_valid :]] = TEST
    return split


def loo_order(interactions: pd.DataFrame, tie_break: str = "row", seed: int = 0) -> np.ndarray:
    """Row positions sorted by (user, timestamp, tie key): `tie_break` orders same-second interactions of a user by
    row position ("row": the source file's order, RecBole's stable sort), item id ("item", then row) or a permutation
    drawn from `seed` ("random")."""
    user, item, ts = _columns(interactions, "user_id", "item_id", "timestamp")
    rows = np.arange(len(user))
    tie_keys = {
        "row": lambda: (rows,),
        "item": lambda: (rows, item),
        "random": lambda: (np.random.default_rng(seed).permutation(len(user)),),
    }
    return np.lexsort((*tie_keys[check_tie_break(tie_break)](), ts, user))  # last key is the primary one


def check_tie_break(tie_break: str) -> str:
    """`tie_break` if it names a TIE_BREAKS rule, else a one-line ValueError naming `data.tie_break`."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"data.tie_break: unknown rule {tie_break!r}; choose from {list(TIE_BREAKS)}")
    return tie_break


def leave_one_out_split(interactions: pd.DataFrame, tie_break: str = "row", seed: int = 0) -> np.ndarray:
    """Per user in `loo_order` (time, then the `tie_break` rule): last interaction TEST, second last VALID, rest TRAIN.

    A user with one interaction has it in TRAIN; a user with two has TRAIN then TEST (no VALID).
    """
    order = loo_order(interactions, tie_break, seed)
    user = interactions["user_id"].to_numpy()
    by_user = pd.Series(user[order]).groupby(user[order], sort=False)
    from_end = by_user.cumcount(ascending=False).to_numpy()  # 0 = the user's last interaction
    size = by_user.transform("size").to_numpy()
    codes = np.full(len(user), TRAIN, dtype=np.int8)
    codes[(from_end == 0) & (size >= 2)] = TEST
    codes[(from_end == 1) & (size >= 3)] = VALID
    split = np.empty_like(codes)
    split[order] = codes
    return split


def temporal_split(interactions: pd.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """One global time cut: the earliest ratios[0] (rounded) of interactions TRAIN, the next ratios[1] VALID, rest TEST.

    Ties move to the later split, so every TRAIN timestamp < every VALID one < every TEST one (strictly); a split can
    thus come out smaller than its ratio, or empty where one timestamp covers it.
    Uses timestamps only, so `data.tie_break` does not apply: equal timestamps always share a split.
    Why one global cut: Ji et al. 2023, "A Critical Study on Data Leakage in Recommender System Offline Evaluation".
    """
    ratios = _check_ratios(ratios)
    (ts,) = _columns(interactions, "timestamp")
    n = len(ts)
    # Sorting by (timestamp, user_id, item_id, row) would pick the same boundary timestamps: only timestamps matter.
    ts_sorted = np.sort(ts)
    n_train = int(round(ratios[0] * n))
    n_valid = int(round(ratios[1] * n))
    split = np.full(n, TRAIN, dtype=np.int8)
    for first, code in ((n_train, VALID), (n_train + n_valid, TEST)):  # the two cuts, not the interactions
        if first < n:
            split[ts >= ts_sorted[first]] = code  # everything at or after the first VALID (TEST) timestamp
    return split


def cold_item_split(interactions: pd.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Draw ratios[1] / ratios[2] of the distinct items as VALID / TEST items; their interactions go there, rest TRAIN.

    Counts are rounded, at least 1 when the ratio > 0 and there are >= 3 items; no VALID/TEST item occurs in TRAIN.
    """
    ratios = _check_ratios(ratios)
    (item,) = _columns(interactions, "item_id")
    items, item_index = np.unique(item, return_inverse=True)  # sorted, so the draw ignores row order
    m = len(items)
    n_valid, n_test = (int(round(r * m)) for r in ratios[1:])
    if m >= 3:
        n_valid, n_test = (max(k, 1) if r > 0 else k for k, r in zip((n_valid, n_test), ratios[1:], strict=True))
    n_valid = min(n_valid, m)
    n_test = min(n_test, m - n_valid)
    order = np.random.default_rng(seed).permutation(m)
    item_code = np.full(m, TRAIN, dtype=np.int8)
    item_code[order[:n_valid]] = VALID
    item_code[order[n_valid : n_valid + n_test]] = TEST
    return item_code[item_index.reshape(-1)]


Splitter = Callable[[pd.DataFrame, Sequence[float], int, str], np.ndarray]


def _random_rows(interactions: pd.DataFrame, ratios: Sequence[float], seed: int, tie_break: str) -> np.ndarray:
    """random_split over the rows of a non-empty interactions frame."""
    _columns(interactions)
    return random_split(len(interactions), ratios, seed)


SPLITTERS: dict[str, Splitter] = {
    "random": _random_rows,
    "loo": lambda interactions, ratios, seed, tie_break: leave_one_out_split(interactions, tie_break, seed),
    "temporal": lambda interactions, ratios, seed, tie_break: temporal_split(interactions, ratios),
    "cold_items": lambda interactions, ratios, seed, tie_break: cold_item_split(interactions, ratios, seed),
}


def split_interactions(
    interactions: pd.DataFrame,
    method: str,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    tie_break: str = "row",
) -> np.ndarray:
    """Split `interactions` with the SPLITTERS entry `method` (ratios/seed/tie_break ignored where it does not use
    them; `tie_break` is checked always)."""
    if method not in SPLITTERS:
        raise ValueError(f"data.split: unknown method {method!r}; choose from {list(SPLITTERS)}")
    return SPLITTERS[method](interactions, ratios, seed, check_tie_break(tie_break))


def check_train_fraction(fraction: float) -> float:
    """`fraction` as a float if 0 < fraction <= 1, else a one-line ValueError naming `data.train_fraction`."""
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"data.train_fraction: need 0 < fraction <= 1, got {fraction}")
    return float(fraction)


def kept_train_rows(split: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: every VALID / TEST row and round(fraction × #TRAIN) TRAIN rows drawn with `seed` (`data.
    train_fraction`; for one seed a smaller fraction keeps a subset of a larger one's rows)."""
    train = np.flatnonzero(split == TRAIN)
    drawn = np.random.default_rng([seed, 1]).permutation(train)  # its own stream: not the split's permutation
    keep = np.ones(len(split), dtype=bool)
    keep[drawn[int(round(check_train_fraction(fraction) * len(train))) :]] = False
    return keep


def log_statistics(interactions: pd.DataFrame) -> dict[str, float]:
    """users, items, interactions and density of a log."""
    n_users, n_items = interactions["user_id"].nunique(), interactions["item_id"].nunique()
    n = len(interactions)
    return {"users": n_users, "items": n_items, "interactions": n, "density": n / (n_users * n_items)}


def split_sizes(labels: np.ndarray, split: np.ndarray) -> dict[str, float]:
    """`<split>_size` and `<split>_positive_rate` of samples with `labels` and `split` codes (0.0 for an empty one)."""
    stats: dict[str, float] = {}
    for code, name in SPLIT_NAMES.items():
        mine = split == code
        stats[f"{name}_size"] = int(mine.sum())
        stats[f"{name}_positive_rate"] = float(labels[mine].mean()) if mine.any() else 0.0
    return stats
