"""`InteractionTables`, the canonical form every source is parsed into, and the builders that assemble and check
it (ids encoded, defaults filled, duplicate and unknown ids reported with their file and line)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from m6rec.data.sources.parse import shown_value

NO_GENRES = "(no genres listed)"
TITLE_YEAR = r"^(.*?)(?: \((\d{4})\))?\s*$"  # "Toy Story (1995)" -> ("Toy Story", "1995"), as in movielens.py
ITEM_KEYS, USER_KEYS = ("item", "title", "year", "genres"), ("user", "age", "gender", "occupation")
Origin = list[tuple[Path, int, int]]  # the files of a table: (path, file line of its first row, rows)


@dataclass
class InteractionTables:
    """A rating dataset in one canonical form, whatever the source format (MovieLens, Amazon, RecBole, any table)."""

    interactions: pd.DataFrame  # user_id:int64, item_id:int64, rating:float32, timestamp:int64
    items: pd.DataFrame  # item_id:int64, title:str, year:str, genres:str ("Action|Crime"), other columns as text
    users: pd.DataFrame  # user_id:int64, age:int64 (or text), gender:str ("M"/"F"), occupation:str; may be empty


def encode_ids(*parts: pd.Series) -> tuple[list[pd.Series], pd.Series | None]:
    """Integer ids as int64; otherwise (any non-digit id, or "01" next to "1") codes 1..N in order of first
    appearance across `parts`, with the raw id of each code."""
    text = pd.concat(parts, ignore_index=True).astype(str)
    raw = None
    digits = text.str.fullmatch(r"\d{1,18}").all()  # 19+ digits could overflow int64: treat as strings
    if digits and text.nunique() == (codes := pd.to_numeric(text)).nunique():
        codes = codes.astype("int64")
    else:
        factor, uniques = pd.factorize(text)
        codes, raw = pd.Series(factor + 1, dtype="int64"), pd.Series(uniques, dtype=str)
    ends = np.cumsum([len(p) for p in parts])
    return [codes.iloc[a:b].reset_index(drop=True) for a, b in zip([0, *ends[:-1]], ends, strict=True)], raw


def join_genres(values: pd.Series, token_seq: bool = False) -> pd.Series:
    """Genres joined by "|" ("(no genres listed)" → ""); RecBole `token_seq` splits on whitespace; lists are joined."""
    if isinstance(next(iter(values.dropna()), ""), list | tuple | np.ndarray):  # a Parquet list column
        values = values.str.join("|")
    values = values.fillna("").astype(str).str.strip().replace(NO_GENRES, "")
    return values.str.split().str.join("|").astype(str) if token_seq else values


def items_frame(ids: pd.Series, title: pd.Series, year: pd.Series | None, genres: pd.Series) -> pd.DataFrame:
    """The canonical item table; without a year column the year is taken from a trailing " (1995)" in the title."""
    title = title.fillna("").astype(str).reset_index(drop=True)
    if year is None:
        parts = title.str.extract(TITLE_YEAR)
        title, year = parts[0].fillna(title).astype(str), parts[1].fillna("")
    year = year.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(year):
        year = year.astype("Int64").astype(str)
    year = year.fillna("").astype(str).str.strip()
    return pd.DataFrame(
        {
            "item_id": ids.reset_index(drop=True).astype("int64"),
            "title": title,
            "year": year.where(year.str.fullmatch(r"\d{4}"), "").astype(str),
            "genres": genres.reset_index(drop=True).astype(str),
        }
    )


def users_frame(
    ids: pd.Series, age: pd.Series | None = None, gender: pd.Series | None = None, occupation: pd.Series | None = None
) -> pd.DataFrame:
    """The canonical user table; a missing attribute is 0 (age) or "" (gender, occupation); an age given as text
    (ML-1M's brackets) stays text."""
    n = len(ids)

    def column(values: pd.Series | None, default: object, dtype: str | type) -> pd.Series:
        return (pd.Series([default] * n) if values is None else values.reset_index(drop=True)).astype(dtype)

    return pd.DataFrame(
        {
            "user_id": ids.reset_index(drop=True).astype("int64"),
            "age": column(age, 0, "int64" if age is None or pd.api.types.is_numeric_dtype(age) else str),
            "gender": column(gender, "", str),
            "occupation": column(occupation, "", str),
        }
    )


def empty_users() -> pd.DataFrame:
    """A user table with the canonical columns and dtypes and no rows (datasets without user attributes)."""
    return users_frame(pd.Series([], dtype="int64"))


def interactions_frame(user: pd.Series, item: pd.Series, rating: pd.Series, time: pd.Series) -> pd.DataFrame:
    """The canonical interaction table with its dtypes (user_id, item_id, rating, timestamp)."""
    columns = {
        "user_id": (user, "int64"),
        "item_id": (item, "int64"),
        "rating": (rating, "float32"),
        "timestamp": (time, "int64"),
    }
    return pd.DataFrame({name: s.reset_index(drop=True).astype(dtype) for name, (s, dtype) in columns.items()})


def file_line(origin: Origin, row: int) -> str:
    """`path:line` of a table row read from `origin`'s files."""
    for path, first, n in origin:
        if row < n:
            return f"{path}:{row + first}"
        row -= n
    return str(origin[-1][0])


def check_tables(
    tables: InteractionTables,
    inter_origin: Origin,
    item_origin: Origin | None = None,
    user_origin: Origin | None = None,
    raw_ids: pd.DataFrame | None = None,
) -> InteractionTables:
    """Duplicate ids in the item/user table, interactions with an unknown id and no interactions at all are one-line
    errors naming the file and line (`raw_ids`: the interactions' ids as written, columns "user"/"item")."""
    for key, name, table, origin in (
        ("item_id", "item", tables.items, item_origin),
        ("user_id", "user", tables.users, user_origin),
    ):
        if name == "user" and table.empty:  # no user attributes: any user id is fine
            continue
        ids = table[key]
        dup = ids.duplicated().to_numpy()
        if dup.any():
            row = int(dup.argmax())
            first = int((ids == ids.iloc[row]).to_numpy().argmax())
            shown = shown_value(table["raw_id"].iloc[row] if "raw_id" in table else ids.iloc[row])
            where = file_line(origin, row) if origin else f"the {name} table"
            first_at = f" (first at line {file_line(origin, first).rsplit(':', 1)[1]})" if origin else ""
            raise ValueError(f"{where}: duplicate {key} {shown} in the {name} table{first_at}")
        unknown = ~tables.interactions[key].isin(ids).to_numpy()
        if unknown.any():
            row = int(unknown.argmax())
            value = raw_ids[name].iloc[row] if raw_ids is not None else tables.interactions[key].iloc[row]
            table_file = f" ({', '.join(p.name for p, _, _ in origin)})" if origin else ""
            raise ValueError(
                f"{file_line(inter_origin, row)}: unknown {key} {shown_value(value)}, not in the {name} "
                f"table{table_file}"
            )
    if tables.interactions.empty:
        raise ValueError(f"{', '.join(str(p) for p, _, _ in inter_origin)}: no interactions")
    return tables


def extra_columns(raw: pd.DataFrame, used: set[str], keys: tuple[str, ...]) -> pd.DataFrame:
    """The columns no mapping uses, as text under their own names (templates may name them)."""
    names = [c for c in raw.columns if c not in used and c not in keys and c not in ("raw_id", "item_id", "user_id")]
    return raw[names].fillna("").astype(str)


def assemble_tables(
    origins: Mapping[str, Origin | None],
    inter: pd.DataFrame,
    rating: pd.Series | None,
    time: pd.Series | None,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
) -> InteractionTables:
    """Canonical tables from checked columns keyed "user"/"item"/"title"/"year"/"genres"/"age"/… (other columns are
    kept as text); ids encoded together (see `encode_ids`), rating 1.0 and row-order time when absent, items/users
    from the ids when absent. `origins` ("inter"/"item"/"user") locate rows in files for error messages."""
    n = len(inter)
    (inter_items, *table_items), raw_items = encode_ids(inter["item"], *([] if items is None else [items["item"]]))
    (inter_users, *table_users), raw_users = encode_ids(inter["user"], *([] if users is None else [users["user"]]))
    interactions = interactions_frame(
        inter_users,
        inter_items,
        pd.Series(np.ones(n, "float32")) if rating is None else rating,
        pd.Series(np.arange(n, dtype="int64")) if time is None else time,
    )

    if items is None:
        ids = pd.Series(np.sort(inter_items.unique()), dtype="int64")
        none = pd.Series([""] * len(ids))
        item_table = items_frame(ids, raw_or_str(ids, raw_items), none, none)
    else:
        ids = table_items[0]
        title = items["title"] if "title" in items else raw_or_str(ids, raw_items)
        genres = items["genres"] if "genres" in items else pd.Series([""] * len(ids))
        item_table = items_frame(ids, title, items.get("year"), genres)
        item_table = item_table.join(extra_columns(items.reset_index(drop=True), set(), ITEM_KEYS))
    if raw_items is not None:
        item_table["raw_id"] = raw_or_str(item_table["item_id"], raw_items).to_numpy()

    if users is not None:
        user_table = users_frame(table_users[0], users.get("age"), users.get("gender"), users.get("occupation"))
        user_table = user_table.join(extra_columns(users.reset_index(drop=True), set(), USER_KEYS))
    elif raw_users is not None:  # no user table, but the id mapping must be kept somewhere
        user_table = users_frame(pd.Series(np.sort(inter_users.unique()), dtype="int64"))
    else:
        user_table = empty_users()
    if raw_users is not None:
        user_table["raw_id"] = raw_or_str(user_table["user_id"], raw_users).to_numpy()
    tables = InteractionTables(interactions, item_table, user_table)
    return check_tables(tables, origins["inter"], origins.get("item"), origins.get("user"), inter[["user", "item"]])


def raw_or_str(ids: pd.Series, raw: pd.Series | None) -> pd.Series:
    """The raw id behind each factorized id, or the id as text."""
    if raw is None:
        return ids.astype(str).reset_index(drop=True)
    return pd.Series(raw.to_numpy()[ids.to_numpy() - 1], dtype=str)
