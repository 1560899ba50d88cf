"""Filtering and negative sampling for implicit-feedback interactions.

`k_core` is RecBole's `user_inter_num_interval` / `item_inter_num_interval` lower bounds, iterated to a fixed point;
`sample_negatives` draws per-positive negatives uniformly or by popularity with vectorised rejection sampling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEGATIVE_STRATEGIES = ("uniform", "popularity")
_MAX_REJECTION_ROUNDS = 64  # rows still colliding after this many rounds are drawn exactly from the allowed items


def _require_columns(frame: pd.DataFrame, key: str, *names: str) -> None:
    """Raise ValueError naming config `key` when `frame` lacks any of the named columns."""
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"{key}: interactions lack columns {missing}")


def k_core(interactions: pd.DataFrame, user_k: int, item_k: int) -> pd.DataFrame:
    """Drop users with < user_k and items with < item_k interactions, repeatedly until stable (row order kept).

    k <= 1 is a no-op; returns a copy with a fresh RangeIndex.
    """
    if user_k < 0 or item_k < 0:
        raise ValueError(f"data.k_core: thresholds must be >= 0, got users >= {user_k}, items >= {item_k}")
    if user_k <= 1 and item_k <= 1:
        return interactions.reset_index(drop=True)
    _require_columns(interactions, "data.k_core", "user_id", "item_id")
    ucode, _ = pd.factorize(interactions["user_id"], sort=False)
    icode, _ = pd.factorize(interactions["item_id"], sort=False)
    n_users, n_items = int(ucode.max(initial=-1)) + 1, int(icode.max(initial=-1)) + 1
    keep = np.ones(len(ucode), dtype=bool)
    while True:
        ucount = np.bincount(ucode[keep], minlength=n_users)
        icount = np.bincount(icode[keep], minlength=n_items)
        new_keep = keep & (ucount[ucode] >= user_k) & (icount[icode] >= item_k)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if not keep.any():
        raise ValueError(f"data.k_core: no interactions left after filtering (users >= {user_k}, items >= {item_k})")
    return interactions[keep].reset_index(drop=True)


def sample_negatives(
    interactions: pd.DataFrame,
    n_per_positive: int,
    strategy: str = "uniform",
    seed: int = 0,
    exclude: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """For each positive row draw `n_per_positive` items its user has in neither `interactions` nor `exclude`.

    Items come from the catalogue (items of both frames), uniformly or ∝ popularity in `interactions`; with replacement.
    """
    if strategy not in NEGATIVE_STRATEGIES:
        raise ValueError(
            f"data.negatives.strategy: unknown strategy {strategy!r}, expected one of {NEGATIVE_STRATEGIES}"
        )
    if n_per_positive < 0:
        raise ValueError(f"data.negatives: n_per_positive must be >= 0, got {n_per_positive}")
    _require_columns(interactions, "data.negatives", "user_id", "item_id", "timestamp")
    if exclude is None:
        exclude = interactions.iloc[:0]
    _require_columns(exclude, "data.negatives", "user_id", "item_id")

    pos_user = interactions["user_id"].to_numpy(dtype=np.int64)
    pos_item = interactions["item_id"].to_numpy(dtype=np.int64)
    all_user = np.concatenate([pos_user, exclude["user_id"].to_numpy(dtype=np.int64)])
    all_item = np.concatenate([pos_item, exclude["item_id"].to_numpy(dtype=np.int64)])
    catalogue = np.unique(all_item)  # sorted item ids; items are keyed by their index here
    users, all_ucode = np.unique(all_user, return_inverse=True)
    all_icode = np.searchsorted(catalogue, all_item)
    forbidden = np.unique((all_ucode.astype(np.int64) << 32) | all_icode)  # sorted (user << 32 | item) keys

    # Integer weights: 1 per item (uniform) or its count among the positives (popularity).
    if strategy == "uniform":
        weights = np.ones(len(catalogue), dtype=np.int64)
    else:
        weights = np.bincount(all_icode[: len(pos_item)], minlength=len(catalogue)).astype(np.int64)
    cdf = np.cumsum(weights)
    total = int(cdf[-1]) if len(cdf) else 0

    # Users whose forbidden items hold all the weight have nothing left to draw.
    f_user, f_item = forbidden >> 32, forbidden & 0xFFFFFFFF
    blocked = np.bincount(f_user, weights=weights[f_item], minlength=len(users))
    pos_ucode = all_ucode[: len(pos_user)]
    stuck = np.unique(pos_ucode[blocked[pos_ucode] >= total])
    if len(stuck):
        raise ValueError(
            f"data.negatives: user {users[stuck[0]]} has interacted with every item it could be given as a negative"
            f" ({len(stuck)} such users)"
        )

    rng = np.random.default_rng(seed)
    row_ucode = np.repeat(pos_ucode.astype(np.int64), n_per_positive)
    neg = np.empty(len(row_ucode), dtype=np.int64)
    todo = np.arange(len(row_ucode))
    for _ in range(_MAX_REJECTION_ROUNDS):
        if len(todo) == 0:
            break
        draw = np.searchsorted(cdf, rng.random(len(todo)) * total, side="right")
        neg[todo] = draw
        todo = todo[np.isin((row_ucode[todo] << 32) | draw, forbidden)]
    if len(todo):  # near-saturated users: draw exactly from their allowed items (a loop over users, not rows)
        todo_users, counts = np.unique(row_ucode[todo], return_counts=True)
        order = np.argsort(row_ucode[todo], kind="stable")
        for u, rows in zip(todo_users, np.split(todo[order], np.cumsum(counts)[:-1]), strict=True):
            allowed = np.ones(len(catalogue), dtype=bool)
            allowed[f_item[f_user == u]] = False
            p = np.where(allowed, weights, 0).astype(np.float64)
            neg[rows] = rng.choice(len(catalogue), size=len(rows), p=p / p.sum())

    return pd.DataFrame(
        {
            "user_id": np.repeat(pos_user, n_per_positive),
            "item_id": catalogue[neg].astype(np.int64),
            "rating": np.zeros(len(neg), dtype=np.float32),
            "timestamp": np.repeat(interactions["timestamp"].to_numpy(dtype=np.int64), n_per_positive),
            "label": np.zeros(len(neg), dtype=np.float32),
        }
    )


def scored_events(
    interactions: pd.DataFrame, implicit: bool, label_threshold: float, negatives: dict, seed: int
) -> pd.DataFrame:
    """Every scored event of `interactions` (with its `split` column) plus `label` and `observed` (a real interaction).

    Explicit mode: label = rating >= `label_threshold`. Implicit mode: every interaction is a positive, and
    `negatives["ratio"]` unobserved items per positive (`negatives["strategy"]`) are sampled within each split (seed
    `seed + split code`), never an item the user has in any split.
    """
    inter = interactions.assign(observed=True)
    if not implicit:
        return inter.assign(label=(inter["rating"] >= label_threshold).astype(np.float32))
    inter = inter.assign(label=np.float32(1.0))
    parts, columns = [inter], ["user_id", "item_id", "rating", "timestamp"]
    for code in sorted(inter["split"].unique()):
        own = inter["split"] == code
        if negatives["ratio"] > 0:
            sampled = sample_negatives(
                inter.loc[own, columns],
                negatives["ratio"],
                negatives["strategy"],
                seed=seed + int(code),
                exclude=inter.loc[~own, columns],
            )
            parts.append(sampled.assign(split=int(code), observed=False, label=np.float32(0.0)))
    return pd.concat(parts, ignore_index=True)
