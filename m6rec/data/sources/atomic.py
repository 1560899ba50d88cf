"""RecBole atomic files (`<name>.inter`, optional `.item` / `.user`, `name:type` headers) as `InteractionTables`."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from m6rec.data.sources.parse import (
    atomic_columns,
    check_present,
    read_csv,
    require_file,
    to_int,
    to_rating,
    to_seconds,
)
from m6rec.data.sources.tables import (
    ITEM_KEYS,
    USER_KEYS,
    InteractionTables,
    Origin,
    assemble_tables,
    extra_columns,
    join_genres,
)

ATOMIC_FIELDS = {
    "user": "user_id",
    "item": "item_id",
    "rating": "rating",
    "time": "timestamp",
    "title": "movie_title",
    "year": "release_year",
    "genres": "class",
    "age": "age",
    "gender": "gender",
    "occupation": "occupation",
}


def _read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole atomic file with `name:type` headers renamed to `name`, and each name's type."""
    df = read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    types = {c.split(":")[0]: (c.split(":", 1)[1] if ":" in c else "token") for c in df.columns}
    return df.rename(columns=lambda c: c.split(":")[0]), types


def _canonical(df: pd.DataFrame, fields: Mapping[str, str], keys: tuple[str, ...]) -> pd.DataFrame:
    """The columns of `df` named by `fields[key]` for each key present, renamed to the key."""
    present = [k for k in keys if fields.get(k) and fields[k] in df.columns]
    return df[[fields[k] for k in present]].set_axis(present, axis=1)


def load_atomic(root: str | Path, dataset: str, fields: Mapping[str, str] | None = None) -> InteractionTables:
    """Parse RecBole atomic files `<dataset>.inter` (required), `.item` and `.user` (optional) under `root`.

    `fields` maps canonical names to the file's (defaults `ATOMIC_FIELDS`); no rating column → 1.0, no time → row order.
    The other columns of `.item` / `.user` are kept as text under their own names.
    """
    root, f = Path(root), {**ATOMIC_FIELDS, **(fields or {})}
    path = root / f"{dataset}.inter"
    require_file(path, "RecBole atomic interactions")
    raw, _ = _read_atomic(path)
    atomic_columns(path, raw, [f["user"], f["item"]])
    for key in ("user", "item"):
        check_present(raw, f[key], path, 2)
    rating = to_rating(raw, f["rating"], path, 2) if f["rating"] in raw else None
    time = to_seconds(raw, f["time"], path, 2) if f["time"] in raw else None
    inter = _canonical(raw, f, ("user", "item"))
    origins: dict[str, Origin | None] = {"inter": [(path, 2, len(raw))], "item": None, "user": None}

    items = users = None
    path = root / f"{dataset}.item"
    if path.is_file():
        raw, types = _read_atomic(path)
        atomic_columns(path, raw, [f["item"]])
        check_present(raw, f["item"], path, 2)
        items = _canonical(raw, f, ("item", "title", "year"))
        if f["genres"] in raw:
            items["genres"] = join_genres(raw[f["genres"]], token_seq=types[f["genres"]] == "token_seq")
        items = items.join(extra_columns(raw, {f[k] for k in ITEM_KEYS}, ITEM_KEYS))
        origins["item"] = [(path, 2, len(raw))]
    path = root / f"{dataset}.user"
    if path.is_file():
        raw, _ = _read_atomic(path)
        atomic_columns(path, raw, [f["user"]])
        check_present(raw, f["user"], path, 2)
        users = _canonical(raw, f, ("user", "gender", "occupation"))
        if f["age"] in raw:
            users["age"] = to_int(raw, f["age"], path, 2)
        users = users.join(extra_columns(raw, {f[k] for k in USER_KEYS}, USER_KEYS))
        origins["user"] = [(path, 2, len(raw))]
    return assemble_tables(origins, inter, rating, time, items, users)


def load_atomic_dir(
    root: str | Path, name: str | None = None, fields: Mapping[str, str] | None = None
) -> InteractionTables:
    """`load_atomic` for `data.dataset=atomic`: `name` is the files' stem, else the one `*.inter` file under `root`."""
    root = Path(root)
    if name is None:
        stems = sorted(p.stem for p in root.glob("*.inter"))
        if len(stems) != 1:
            raise ValueError(f"data.source.name: {root} holds {len(stems)} .inter files {stems}; name the one to use")
        name = stems[0]
    return load_atomic(root, name, fields)
