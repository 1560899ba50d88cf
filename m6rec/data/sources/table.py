"""Any CSV/TSV/Parquet table (one file or a glob) described by a column mapping from the config."""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from m6rec.data.sources.parse import check_present, read_any, select_columns, to_int, to_rating, to_seconds
from m6rec.data.sources.tables import InteractionTables, Origin, assemble_tables, join_genres


def expand_paths(path_or_glob: str | Path) -> list[Path]:
    """The files a glob matches (sorted; none is an error), or the one path given."""
    pattern = str(path_or_glob)
    if glob.has_magic(pattern):
        paths = sorted(Path(p) for p in glob.glob(pattern))
        if not paths:
            raise FileNotFoundError(f"{pattern}: no file matches")
        return paths
    return [Path(pattern)]


def _origin(pieces: list[tuple[Path, pd.DataFrame, int]]) -> Origin:
    return [(path, offset, len(df)) for path, df, offset in pieces]


def _read_mapped(
    path_or_glob: str | Path, mapping: Mapping[str, str | None], key: str
) -> list[tuple[Path, pd.DataFrame, int]]:
    """Each matching table with its mapped columns renamed to the mapping's keys; `key` (the id) is required."""
    wanted = {k: col for k, col in mapping.items() if col}
    if key not in wanted:
        raise ValueError(f"{path_or_glob}: the column mapping needs '{key}'; got {dict(mapping)}")
    out = []
    for path in expand_paths(path_or_glob):
        df, offset = read_any(path)
        df = select_columns(path, df, list(wanted.values())).set_axis(list(wanted), axis=1)
        check_present(df, key, path, offset, wanted[key])
        out.append((path, df, offset))
    return out


def _concat(pieces: list[pd.Series]) -> pd.Series:
    return pd.concat(pieces, ignore_index=True)


def load_table(
    path_or_glob: str | Path,
    columns: Mapping[str, str | None],
    item_path: str | Path | None = None,
    item_columns: Mapping[str, str | None] | None = None,
    user_path: str | Path | None = None,
    user_columns: Mapping[str, str | None] | None = None,
) -> InteractionTables:
    """Interactions from CSV/TSV/Parquet file(s) with `columns` = {"user", "item", "rating"?, "time"?} → file columns.

    Optional item table {"item", "title"?, "genres"?, "year"?, <any name>?} and user table {"user", "age"?,
    "gender"?, "occupation"?, <any name>?} (other names become text columns templates can use); string ids become
    1..N in order of first appearance, kept as `raw_id` columns.
    """
    if not columns.get("user"):
        raise ValueError(f"{path_or_glob}: the column mapping needs 'user'; got {dict(columns)}")
    pieces = _read_mapped(path_or_glob, columns, "item")
    for path, df, offset in pieces:
        check_present(df, "user", path, offset, columns["user"])
    named = {k: col for k, col in columns.items() if col}  # error messages name the file's column

    def checked(key: str, convert: Callable[[pd.DataFrame, str, Path, int], pd.Series]) -> pd.Series | None:
        if key not in named:
            return None
        return _concat([convert(df.rename(columns={key: named[key]}), named[key], p, o) for p, df, o in pieces])

    rating, time = checked("rating", to_rating), checked("time", to_seconds)
    inter = pd.concat([df[["user", "item"]] for _, df, _ in pieces], ignore_index=True)

    items = users = None
    origins: dict[str, Origin | None] = {"inter": _origin(pieces), "item": None, "user": None}
    if item_path is not None:
        parts = _read_mapped(item_path, item_columns or {"item": columns["item"]}, "item")
        items = pd.concat([df for _, df, _ in parts], ignore_index=True)
        origins["item"] = _origin(parts)
        for key in set(items.columns) - {"item", "year"}:  # list cells (Parquet) joined; year may be numeric
            items[key] = join_genres(items[key])
    if user_path is not None:
        mapping = user_columns or {"user": columns["user"]}
        parts = _read_mapped(user_path, mapping, "user")
        users = pd.concat([df for _, df, _ in parts], ignore_index=True)
        origins["user"] = _origin(parts)
        if "age" in users:
            users["age"] = _concat(
                [to_int(df.rename(columns={"age": mapping["age"]}), mapping["age"], p, o) for p, df, o in parts]
            )
    return assemble_tables(origins, inter, rating, time, items, users)


def load_table_dir(
    root: str | Path,
    interactions: str,
    columns: Mapping[str, str | None],
    items: str | None = None,
    item_columns: Mapping[str, str | None] | None = None,
    users: str | None = None,
    user_columns: Mapping[str, str | None] | None = None,
) -> InteractionTables:
    """`load_table` for `data.dataset=table`: file names / globs relative to `root` (absolute ones kept)."""
    root = Path(root)
    at = {
        key: None if name is None else root / name
        for key, name in (("interactions", interactions), ("items", items), ("users", users))
    }
    return load_table(at["interactions"], columns, at["items"], item_columns, at["users"], user_columns)
