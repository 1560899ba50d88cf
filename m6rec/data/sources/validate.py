"""The one validation every loader's interactions pass through (m6rec.data.sources.registry.load): ratings
finite and within the dataset's declared scale, and duplicate (user, item) interactions handled by
`data.duplicates`; plus the checks the ML-100K parser uses per column (integer ids as written). Errors are one
line naming the file and line (`Origin`), else the row."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from m6rec.utils.errors import UserError

log = logging.getLogger(__name__)

# The rating scale each dataset declares (GroupLens READMEs; Amazon's 1-5 stars); others: any finite rating >= 0.
RATING_SCALES: dict[str, tuple[float, float]] = {
    "ml-100k": (1, 5),
    "ml-1m": (1, 5),
    "ml-10m": (0.5, 5),
    "ml-20m": (0.5, 5),
    "ml-25m": (0.5, 5),
    "ml-latest-small": (0.5, 5),
    "ml-latest": (0.5, 5),
    "amazon": (1, 5),
}
DUPLICATE_POLICIES = ("error", "warn", "drop")
Origin = tuple[Path, int] | None  # (file, line of the first row) when rows map one-to-one onto lines


def where(origin: Origin, row: int) -> str:
    """`file:line` of a row, else `interaction row N` (1-based)."""
    return f"{origin[0]}:{row + origin[1]}" if origin is not None else f"interaction row {row + 1}"


def to_int(raw: pd.Series, column: str, path: Path, first_line: int) -> pd.Series:
    """Non-negative integers: text written as digits (`12.7`, `1e3`, `-1` and blanks are errors naming the line), or a
    numeric column whose values are whole numbers >= 0 (Parquet)."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(np.float64)
        bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    else:
        text = raw.astype(str).str.strip()
        bad = ~text.str.fullmatch(r"\d{1,18}").to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise UserError(
            f"{path}:{row + first_line}: column '{column}' has invalid value {raw.iloc[row]!r} "
            "(expected a non-negative integer)"
        )
    return raw.astype("int64") if pd.api.types.is_numeric_dtype(raw) else text.astype("int64")


def check_ratings(ratings: pd.Series, dataset: str, origin: Origin = None) -> None:
    """Every rating finite (and >= 0); within RATING_SCALES[dataset] when the dataset declares one."""
    values = ratings.to_numpy(np.float64)
    low, high = RATING_SCALES.get(dataset, (0.0, np.inf))
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    if bad.any():
        row = int(bad.argmax())
        scale = f"within {dataset}'s scale {low:g}-{high:g}" if dataset in RATING_SCALES else "finite and >= 0"
        raise UserError(f"{where(origin, row)}: rating must be {scale}, got {values[row]:g}")


def handle_duplicates(inter: pd.DataFrame, policy: str, origin: Origin = None) -> pd.DataFrame:
    """Repeated (user_id, item_id) interactions: `error` (one line naming the repeat and the first), `warn` (one
    warning, all kept) or `drop` (the first occurrence kept)."""
    if policy not in DUPLICATE_POLICIES:
        raise UserError(f"data.duplicates: expected one of {list(DUPLICATE_POLICIES)}, got {policy!r}")
    repeated = inter.duplicated(["user_id", "item_id"]).to_numpy()
    if not repeated.any():
        return inter
    row = int(repeated.argmax())
    user, item = int(inter["user_id"].iloc[row]), int(inter["item_id"].iloc[row])
    first = int(((inter["user_id"] == user) & (inter["item_id"] == item)).to_numpy().argmax())
    first_at = f"line {first + origin[1]}" if origin is not None else f"row {first + 1}"
    message = (
        f"{where(origin, row)}: duplicate interaction (user_id {user}, item_id {item}; first at {first_at}), "
        f"{int(repeated.sum())} repeated in all"
    )
    if policy == "error":
        raise UserError(f"{message}; set data.duplicates=drop (keep the first) or warn (keep all)")
    if policy == "warn":
        log.warning("%s (kept: data.duplicates=warn)", message)
        return inter
    log.info("%s (dropped: data.duplicates=drop)", message)
    return inter[~repeated].reset_index(drop=True)
