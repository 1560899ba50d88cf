"""More rating datasets in the canonical `MovieLensTables` form: GroupLens ML-1M / ML-20M / ML-25M / ml-latest,
RecBole atomic files, and any CSV/TSV/Parquet table described by a column mapping from the config.

Every parse error is one line naming the file and the line (and the column where one applies).
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import logging
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from filelock import FileLock

from m6rec.data.sources import movielens
from m6rec.data.sources.movielens import MovieLensTables, _atomic_columns, _to_int
from m6rec.utils.files import atomic_dir, file_digest

log = logging.getLogger(__name__)

_BASE_URL = "https://files.grouplens.org/datasets/movielens"
GROUPLENS: dict[str, tuple[str, str | None]] = {
    "ml-1m": (f"{_BASE_URL}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": (f"{_BASE_URL}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": (f"{_BASE_URL}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-latest-small": (f"{_BASE_URL}/ml-latest-small.zip", None),  # changes with every refresh: no fixed md5
}
ML1M_OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student",
    "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ATOMIC_FIELDS = {
    "user": "user_id", "item": "item_id", "rating": "rating", "time": "timestamp",
    "title": "movie_title", "year": "release_year", "genres": "class",
    "age": "age", "gender": "gender", "occupation": "occupation",
}  # fmt: skip
NO_GENRES = "(no genres listed)"
_TITLE_YEAR = r"^(.*?)(?: \((\d{4})\))?\s*$"  # "Toy Story (1995)" -> ("Toy Story", "1995"), as in movielens.py
_EPOCH = pd.Timestamp(0, tz="UTC")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


# --------------------------------------------------------------------------- reading
def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")


def _utf8_error(path: Path) -> ValueError:
    """The first byte of `path` that is not UTF-8, found by streaming (only called once a decode has failed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed, lines = 0, 1
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                at = consumed - pending + err.start
                lines += chunk[: max(0, err.start - pending)].count(b"\n")
                return ValueError(f"{path}: not valid UTF-8 at byte {at} (line {lines})")
            if not chunk:
                return ValueError(f"{path}: not valid UTF-8")  # pandas failed where a plain decode does not
            consumed += len(chunk)
            lines += chunk.count(b"\n")


def _read_csv(path: Path, sep: str = ",", quoting: int = csv.QUOTE_MINIMAL, as_text: bool = True) -> pd.DataFrame:
    """A headed UTF-8 table; `as_text` keeps every cell as its exact text, else pandas infers dtypes (faster)."""
    text_kw = {"dtype": str, "keep_default_na": False} if as_text else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed types only where a value is bad
            return pd.read_csv(
                path, sep=sep, encoding="utf-8", engine="c", quoting=quoting, skip_blank_lines=False, **text_kw
            )
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}:1: empty file, expected a header line") from None
    except pd.errors.ParserError as err:
        msg = str(err).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            raise ValueError(f"{path}:{m[2]}: expected {m[1]} fields, saw {m[3]}") from None
        m = re.search(r"EOF inside string starting at row (\d+)", msg)  # pandas counts lines from 0 here
        if m:
            line = int(m[1]) + 1
            raise ValueError(f"{path}:{line}: unterminated quote (the field runs to the end of the file)") from None
        raise ValueError(f"{path}: {msg}") from None


def _read_dat(path: Path, names: list[str], as_text: bool = True) -> pd.DataFrame:
    """A GroupLens `::`-separated file (latin-1, no header, no quoting), every line's field count checked.

    `::` becomes a tab and each line gets a sentinel last field, so pandas' C parser does the work: a short line shows
    as a row whose sentinel moved left, a long one as a parser error.
    """
    _require_file(path, "a GroupLens ML-1M file")
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n")
    if "\t" in text:
        raise ValueError(f"{path}:{text.count(chr(10), 0, text.index(chr(9))) + 1}: unexpected tab character")
    if not text:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in names})
    width, sentinel = len(names), "\x01"
    body = (text if text.endswith("\n") else text + "\n").replace("::", "\t").replace("\n", f"\t{sentinel}\n")
    kwargs = {"dtype": str} if as_text else {}
    try:
        df = pd.read_csv(
            io.StringIO(body), sep="\t", header=None, quoting=csv.QUOTE_NONE, engine="c", na_filter=False,
            skip_blank_lines=False, **kwargs,
        )  # fmt: skip
    except pd.errors.ParserError as err:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if not m:
            raise ValueError(f"{path}: {str(err).strip()}") from None
        first_ok = int(m[1]) == width + 1  # else line 1 set the wrong width
        line, saw = (int(m[2]), int(m[3]) - 1) if first_ok else (1, int(m[1]) - 1)
        raise ValueError(f"{path}:{line}: expected {width} '::'-separated fields, saw {saw}") from None
    if df.shape[1] != width + 1:
        raise ValueError(f"{path}:1: expected {width} '::'-separated fields, saw {df.shape[1] - 1}")
    bad = (df[width] != sentinel).to_numpy()
    if bad.any():
        row = int(bad.argmax())
        saw = int((df.iloc[row] == sentinel).to_numpy().argmax())
        raise ValueError(f"{path}:{row + 1}: expected {width} '::'-separated fields, saw {saw}")
    return df.iloc[:, :width].set_axis(names, axis=1)


def _read_any(path: Path) -> tuple[pd.DataFrame, int]:
    """A .csv / .tsv (optionally compressed) or .parquet table and the file line of its first row."""
    _require_file(path, "a table named in the data config")
    name = path.name.lower()
    name = next((name.removesuffix(ext) for ext in _COMPRESSION if name.endswith(ext)), name)
    if name.endswith(".parquet"):
        try:
            return pd.read_parquet(path), 1
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise ValueError(f"{path}: {type(err).__name__}: {err}".splitlines()[0]) from None
    if name.endswith(".csv"):
        return _read_csv(path), 2
    if name.endswith(".tsv"):
        return _read_csv(path, sep="\t", quoting=csv.QUOTE_NONE), 2
    raise ValueError(f"{path}: unsupported table format; use .csv, .tsv or .parquet")


def _check_present(df: pd.DataFrame, col: str, path: Path, offset: int, name: str | None = None) -> None:
    """An id column may not have empty cells (they would silently become an id)."""
    values = df[col]
    bad = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    if bad.any():
        raise ValueError(f"{path}:{int(bad.argmax()) + offset}: column '{name or col}' is empty")


def _select(path: Path, df: pd.DataFrame, wanted: list[str]) -> pd.DataFrame:
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; header has {list(df.columns)}")
    return df[wanted]


# --------------------------------------------------------------------------- columns
def _shown(value: object) -> str:
    """A cell for an error message: numbers as written (not `np.float64(nan)`), text quoted."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _to_rating(df: pd.DataFrame, col: str, path: Path, offset: int) -> pd.Series:
    """A finite rating >= 0 as float32, else an error naming the line and the value."""
    values = pd.to_numeric(df[col], errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy()) | (values.to_numpy() < 0)
    if bad.any():
        row = int(bad.argmax())
        raise ValueError(
            f"{path}:{row + offset}: column '{col}' must be a number >= 0, got {_shown(df[col].iloc[row])}"
        )
    return values.astype("float32")


def _to_seconds(df: pd.DataFrame, col: str, path: Path, offset: int) -> pd.Series:
    """Integer seconds, or ISO dates (naive = UTC) as seconds since the epoch; the first row decides which."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = s.dt.tz_localize("UTC") if s.dt.tz is None else s
    elif len(s) == 0 or pd.to_numeric(s.iloc[:1], errors="coerce").notna().all():
        return _to_int(df, col, path, offset)
    else:
        dt = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    bad = dt.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise ValueError(
            f"{path}:{row + offset}: column '{col}' has invalid value {s.iloc[row]!r} (expected seconds or an ISO date)"
        )
    return ((dt - _EPOCH) // pd.Timedelta(seconds=1)).astype("int64").reset_index(drop=True)


def _encode_ids(*parts: pd.Series) -> tuple[list[pd.Series], pd.Series | None]:
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


def _genres(values: pd.Series, token_seq: bool = False) -> pd.Series:
    """Genres joined by "|" ("(no genres listed)" → ""); RecBole `token_seq` splits on whitespace; lists are joined."""
    if isinstance(next(iter(values.dropna()), ""), list | tuple | np.ndarray):  # a Parquet list column
        values = values.str.join("|")
    values = values.fillna("").astype(str).str.strip().replace(NO_GENRES, "")
    return values.str.split().str.join("|").astype(str) if token_seq else values


def _items_frame(ids: pd.Series, title: pd.Series, year: pd.Series | None, genres: pd.Series) -> pd.DataFrame:
    """The canonical item table; without a year column the year is taken from a trailing " (1995)" in the title."""
    title = title.fillna("").astype(str).reset_index(drop=True)
    if year is None:
        parts = title.str.extract(_TITLE_YEAR)
        title, year = parts[0].fillna(title).astype(str), parts[1].fillna("")
    year = year.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(year):
        year = year.astype("Int64").astype(str)
    year = year.fillna("").astype(str).str.strip()
    return pd.DataFrame({
        "item_id": ids.reset_index(drop=True).astype("int64"),
        "title": title,
        "year": year.where(year.str.fullmatch(r"\d{4}"), "").astype(str),
        "genres": genres.reset_index(drop=True).astype(str),
    })  # fmt: skip


def _users_frame(
    ids: pd.Series, age: pd.Series | None = None, gender: pd.Series | None = None, occupation: pd.Series | None = None
) -> pd.DataFrame:
    """The canonical user table; a missing attribute is 0 (age) or "" (gender, occupation); an age given as text
    (ML-1M's brackets) stays text."""
    n = len(ids)

    def column(values: pd.Series | None, default: object, dtype: str | type) -> pd.Series:
        return (pd.Series([default] * n) if values is None else values.reset_index(drop=True)).astype(dtype)

    return pd.DataFrame({
        "user_id": ids.reset_index(drop=True).astype("int64"),
        "age": column(age, 0, "int64" if age is None or pd.api.types.is_numeric_dtype(age) else str),
        "gender": column(gender, "", str), "occupation": column(occupation, "", str),
    })  # fmt: skip


def empty_users() -> pd.DataFrame:
    """A user table with the canonical columns and dtypes and no rows (datasets without user attributes)."""
    return _users_frame(pd.Series([], dtype="int64"))


def _interactions(user: pd.Series, item: pd.Series, rating: pd.Series, time: pd.Series) -> pd.DataFrame:
    columns = {"user_id": (user, "int64"), "item_id": (item, "int64"), "rating": (rating, "float32"),
               "timestamp": (time, "int64")}  # fmt: skip
    return pd.DataFrame({name: s.reset_index(drop=True).astype(dtype) for name, (s, dtype) in columns.items()})


Origin = list[tuple[Path, int, int]]  # the files of a table: (path, file line of its first row, rows)


def _line(origin: Origin, row: int) -> str:
    """`path:line` of a table row read from `origin`'s files."""
    for path, first, n in origin:
        if row < n:
            return f"{path}:{row + first}"
        row -= n
    return str(origin[-1][0])


def _finish(
    tables: MovieLensTables,
    inter_origin: Origin,
    item_origin: Origin | None = None,
    user_origin: Origin | None = None,
    raw_ids: pd.DataFrame | None = None,
) -> MovieLensTables:
    """Duplicate ids in the item/user table, interactions with an unknown id and no interactions at all are one-line
    errors naming the file and line (`raw_ids`: the interactions' ids as written, columns "user"/"item")."""
    for key, name, table, origin in (("item_id", "item", tables.items, item_origin),
                                     ("user_id", "user", tables.users, user_origin)):  # fmt: skip
        if name == "user" and table.empty:  # no user attributes: any user id is fine
            continue
        ids = table[key]
        dup = ids.duplicated().to_numpy()
        if dup.any():
            row = int(dup.argmax())
            first = int((ids == ids.iloc[row]).to_numpy().argmax())
            shown = _shown(table["raw_id"].iloc[row] if "raw_id" in table else ids.iloc[row])
            where = _line(origin, row) if origin else f"the {name} table"
            first_at = f" (first at line {_line(origin, first).rsplit(':', 1)[1]})" if origin else ""
            raise ValueError(f"{where}: duplicate {key} {shown} in the {name} table{first_at}")
        unknown = ~tables.interactions[key].isin(ids).to_numpy()
        if unknown.any():
            row = int(unknown.argmax())
            value = raw_ids[name].iloc[row] if raw_ids is not None else tables.interactions[key].iloc[row]
            table_file = f" ({', '.join(p.name for p, _, _ in origin)})" if origin else ""
            raise ValueError(f"{_line(inter_origin, row)}: unknown {key} {_shown(value)}, not in the {name} table"
                             f"{table_file}")  # fmt: skip
    if tables.interactions.empty:
        raise ValueError(f"{', '.join(str(p) for p, _, _ in inter_origin)}: no interactions")
    return tables


# --------------------------------------------------------------------------- GroupLens ML-1M
def load_ml1m(root: str | Path) -> MovieLensTables:
    """Parse GroupLens ML-1M (`ratings.dat`, `movies.dat`, `users.dat`: latin-1, `::`-separated)."""
    root = Path(root)
    path = root / "ratings.dat"
    raw = _read_dat(path, ["user_id", "item_id", "rating", "timestamp"], as_text=False)
    ratings = [(path, 1, len(raw))]
    inter = _interactions(
        _to_int(raw, "user_id", path, 1), _to_int(raw, "item_id", path, 1),
        _to_rating(raw, "rating", path, 1), _to_int(raw, "timestamp", path, 1),
    )  # fmt: skip

    path = root / "movies.dat"
    raw = _read_dat(path, ["item_id", "title", "genres"])
    movies = [(path, 1, len(raw))]
    items = _items_frame(_to_int(raw, "item_id", path, 1), raw["title"], None, _genres(raw["genres"]))

    path = root / "users.dat"
    raw = _read_dat(path, ["user_id", "gender", "age", "occupation", "zip"])
    occupation = _decode(raw, "occupation", dict(enumerate(ML1M_OCCUPATIONS)), path)
    age = _decode(raw, "age", ML1M_AGES, path)  # the README's bracket codes → "25-34"
    users = _users_frame(_to_int(raw, "user_id", path, 1), age, raw["gender"], occupation)
    return _finish(MovieLensTables(inter, items, users), ratings, movies, [(path, 1, len(raw))])


def _decode(raw: pd.DataFrame, col: str, names: Mapping[int, str], path: Path) -> pd.Series:
    """A code column of a `.dat` file as its names (line = row + 1); an unknown code names its line."""
    codes = _to_int(raw, col, path, 1)
    known = codes.isin(list(names)).to_numpy()
    if not known.all():
        row = int((~known).argmax())
        raise ValueError(f"{path}:{row + 1}: column '{col}' has unknown code {raw[col].iloc[row]!r}")
    return codes.map(names).astype(str)


# --------------------------------------------------------------------------- GroupLens CSV releases
def load_ml_csv(root: str | Path) -> MovieLensTables:
    """Parse ML-20M / ML-25M / ml-latest(-small) (`ratings.csv`, `movies.csv`; UTF-8); there is no user table."""
    root = Path(root)
    path = root / "ratings.csv"
    _require_file(path, "a GroupLens ratings.csv")
    raw = _select(path, _read_csv(path, as_text=False), ["userId", "movieId", "rating", "timestamp"])
    ratings = [(path, 2, len(raw))]
    inter = _interactions(
        _to_int(raw, "userId", path, 2), _to_int(raw, "movieId", path, 2),
        _to_rating(raw, "rating", path, 2), _to_int(raw, "timestamp", path, 2),
    )  # fmt: skip

    path = root / "movies.csv"
    _require_file(path, "a GroupLens movies.csv")
    raw = _select(path, _read_csv(path), ["movieId", "title", "genres"])
    items = _items_frame(_to_int(raw, "movieId", path, 2), raw["title"], None, _genres(raw["genres"]))
    return _finish(MovieLensTables(inter, items, empty_users()), ratings, [(path, 2, len(raw))])


# --------------------------------------------------------------------------- RecBole atomic files
def _read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole atomic file with `name:type` headers renamed to `name`, and each name's type."""
    df = _read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    types = {c.split(":")[0]: (c.split(":", 1)[1] if ":" in c else "token") for c in df.columns}
    return df.rename(columns=lambda c: c.split(":")[0]), types


def _canonical(df: pd.DataFrame, fields: Mapping[str, str], keys: tuple[str, ...]) -> pd.DataFrame:
    """The columns of `df` named by `fields[key]` for each key present, renamed to the key."""
    present = [k for k in keys if fields.get(k) and fields[k] in df.columns]
    return df[[fields[k] for k in present]].set_axis(present, axis=1)


ITEM_KEYS, USER_KEYS = ("item", "title", "year", "genres"), ("user", "age", "gender", "occupation")


def _extras(raw: pd.DataFrame, used: set[str], keys: tuple[str, ...]) -> pd.DataFrame:
    """The columns no mapping uses, as text under their own names (templates may name them)."""
    names = [c for c in raw.columns if c not in used and c not in keys and c not in ("raw_id", "item_id", "user_id")]
    return raw[names].fillna("").astype(str)


def load_atomic(root: str | Path, dataset: str, fields: Mapping[str, str] | None = None) -> MovieLensTables:
    """Parse RecBole atomic files `<dataset>.inter` (required), `.item` and `.user` (optional) under `root`.

    `fields` maps canonical names to the file's (defaults `ATOMIC_FIELDS`); no rating column → 1.0, no time → row order.
    The other columns of `.item` / `.user` are kept as text under their own names.
    """
    root, f = Path(root), {**ATOMIC_FIELDS, **(fields or {})}
    path = root / f"{dataset}.inter"
    _require_file(path, "RecBole atomic interactions")
    raw, _ = _read_atomic(path)
    _atomic_columns(path, raw, [f["user"], f["item"]])
    for key in ("user", "item"):
        _check_present(raw, f[key], path, 2)
    rating = _to_rating(raw, f["rating"], path, 2) if f["rating"] in raw else None
    time = _to_seconds(raw, f["time"], path, 2) if f["time"] in raw else None
    inter = _canonical(raw, f, ("user", "item"))
    origins: dict[str, Origin | None] = {"inter": [(path, 2, len(raw))], "item": None, "user": None}

    items = users = None
    path = root / f"{dataset}.item"
    if path.is_file():
        raw, types = _read_atomic(path)
        _atomic_columns(path, raw, [f["item"]])
        _check_present(raw, f["item"], path, 2)
        items = _canonical(raw, f, ("item", "title", "year"))
        if f["genres"] in raw:
            items["genres"] = _genres(raw[f["genres"]], token_seq=types[f["genres"]] == "token_seq")
        items = items.join(_extras(raw, {f[k] for k in ITEM_KEYS}, ITEM_KEYS))
        origins["item"] = [(path, 2, len(raw))]
    path = root / f"{dataset}.user"
    if path.is_file():
        raw, _ = _read_atomic(path)
        _atomic_columns(path, raw, [f["user"]])
        _check_present(raw, f["user"], path, 2)
        users = _canonical(raw, f, ("user", "gender", "occupation"))
        if f["age"] in raw:
            users["age"] = _to_int(raw, f["age"], path, 2)
        users = users.join(_extras(raw, {f[k] for k in USER_KEYS}, USER_KEYS))
        origins["user"] = [(path, 2, len(raw))]
    return _assemble(origins, inter, rating, time, items, users)


def load_atomic_dir(
    root: str | Path, name: str | None = None, fields: Mapping[str, str] | None = None
) -> MovieLensTables:
    """`load_atomic` for `data.dataset=atomic`: `name` is the files' stem, else the one `*.inter` file under `root`."""
    root = Path(root)
    if name is None:
        stems = sorted(p.stem for p in root.glob("*.inter"))
        if len(stems) != 1:
            raise ValueError(f"data.source.name: {root} holds {len(stems)} .inter files {stems}; name the one to use")
        name = stems[0]
    return load_atomic(root, name, fields)


def _assemble(
    origins: Mapping[str, Origin | None],
    inter: pd.DataFrame,
    rating: pd.Series | None,
    time: pd.Series | None,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
) -> MovieLensTables:
    """Canonical tables from checked columns keyed "user"/"item"/"title"/"year"/"genres"/"age"/… (other columns are
    kept as text); ids encoded together (see `_encode_ids`), rating 1.0 and row-order time when absent, items/users
    from the ids when absent. `origins` ("inter"/"item"/"user") locate rows in files for error messages."""
    n = len(inter)
    (inter_items, *table_items), raw_items = _encode_ids(inter["item"], *([] if items is None else [items["item"]]))
    (inter_users, *table_users), raw_users = _encode_ids(inter["user"], *([] if users is None else [users["user"]]))
    interactions = _interactions(
        inter_users, inter_items,
        pd.Series(np.ones(n, "float32")) if rating is None else rating,
        pd.Series(np.arange(n, dtype="int64")) if time is None else time,
    )  # fmt: skip

    if items is None:
        ids = pd.Series(np.sort(inter_items.unique()), dtype="int64")
        none = pd.Series([""] * len(ids))
        item_table = _items_frame(ids, _raw_or_str(ids, raw_items), none, none)
    else:
        ids = table_items[0]
        title = items["title"] if "title" in items else _raw_or_str(ids, raw_items)
        genres = items["genres"] if "genres" in items else pd.Series([""] * len(ids))
        item_table = _items_frame(ids, title, items.get("year"), genres)
        item_table = item_table.join(_extras(items.reset_index(drop=True), set(), ITEM_KEYS))
    if raw_items is not None:
        item_table["raw_id"] = _raw_or_str(item_table["item_id"], raw_items).to_numpy()

    if users is not None:
        user_table = _users_frame(table_users[0], users.get("age"), users.get("gender"), users.get("occupation"))
        user_table = user_table.join(_extras(users.reset_index(drop=True), set(), USER_KEYS))
    elif raw_users is not None:  # no user table, but the id mapping must be kept somewhere
        user_table = _users_frame(pd.Series(np.sort(inter_users.unique()), dtype="int64"))
    else:
        user_table = empty_users()
    if raw_users is not None:
        user_table["raw_id"] = _raw_or_str(user_table["user_id"], raw_users).to_numpy()
    tables = MovieLensTables(interactions, item_table, user_table)
    return _finish(tables, origins["inter"], origins.get("item"), origins.get("user"), inter[["user", "item"]])


def _raw_or_str(ids: pd.Series, raw: pd.Series | None) -> pd.Series:
    """The raw id behind each factorized id, or the id as text."""
    if raw is None:
        return ids.astype(str).reset_index(drop=True)
    return pd.Series(raw.to_numpy()[ids.to_numpy() - 1], dtype=str)


# --------------------------------------------------------------------------- any table + a column mapping
def _paths(path_or_glob: str | Path) -> list[Path]:
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
    for path in _paths(path_or_glob):
        df, offset = _read_any(path)
        df = _select(path, df, list(wanted.values())).set_axis(list(wanted), axis=1)
        _check_present(df, key, path, offset, wanted[key])
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
) -> MovieLensTables:
    """Interactions from CSV/TSV/Parquet file(s) with `columns` = {"user", "item", "rating"?, "time"?} → file columns.

    Optional item table {"item", "title"?, "genres"?, "year"?, <any name>?} and user table {"user", "age"?,
    "gender"?, "occupation"?, <any name>?} (other names become text columns templates can use); string ids become
    1..N in order of first appearance, kept as `raw_id` columns.
    """
    if not columns.get("user"):
        raise ValueError(f"{path_or_glob}: the column mapping needs 'user'; got {dict(columns)}")
    pieces = _read_mapped(path_or_glob, columns, "item")
    for path, df, offset in pieces:
        _check_present(df, "user", path, offset, columns["user"])
    named = {k: col for k, col in columns.items() if col}  # error messages name the file's column

    def checked(key: str, convert: Callable[[pd.DataFrame, str, Path, int], pd.Series]) -> pd.Series | None:
        if key not in named:
            return None
        return _concat([convert(df.rename(columns={key: named[key]}), named[key], p, o) for p, df, o in pieces])

    rating, time = checked("rating", _to_rating), checked("time", _to_seconds)
    inter = pd.concat([df[["user", "item"]] for _, df, _ in pieces], ignore_index=True)

    items = users = None
    origins: dict[str, Origin | None] = {"inter": _origin(pieces), "item": None, "user": None}
    if item_path is not None:
        parts = _read_mapped(item_path, item_columns or {"item": columns["item"]}, "item")
        items = pd.concat([df for _, df, _ in parts], ignore_index=True)
        origins["item"] = _origin(parts)
        for key in set(items.columns) - {"item", "year"}:  # list cells (Parquet) joined; year may be numeric
            items[key] = _genres(items[key])
    if user_path is not None:
        mapping = user_columns or {"user": columns["user"]}
        parts = _read_mapped(user_path, mapping, "user")
        users = pd.concat([df for _, df, _ in parts], ignore_index=True)
        origins["user"] = _origin(parts)
        if "age" in users:
            users["age"] = _concat([_to_int(df.rename(columns={"age": mapping["age"]}), mapping["age"], p, o)
                                    for p, df, o in parts])  # fmt: skip
    return _assemble(origins, inter, rating, time, items, users)


def load_table_dir(
    root: str | Path,
    interactions: str,
    columns: Mapping[str, str | None],
    items: str | None = None,
    item_columns: Mapping[str, str | None] | None = None,
    users: str | None = None,
    user_columns: Mapping[str, str | None] | None = None,
) -> MovieLensTables:
    """`load_table` for `data.dataset=table`: file names / globs relative to `root` (absolute ones kept)."""
    root = Path(root)
    at = {key: None if name is None else root / name for key, name in
          (("interactions", interactions), ("items", items), ("users", users))}  # fmt: skip
    return load_table(at["interactions"], columns, at["items"], item_columns, at["users"], user_columns)


# --------------------------------------------------------------------------- fetch
def _extract(archive: Path, name: str, out: Path) -> None:
    """Every file of the zip into `out`, the zip's top `<name>/` folder stripped; nothing may escape `out`."""
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            if member.is_dir():
                continue
            parts = PurePosixPath(member.filename).parts
            parts = parts[1:] if len(parts) > 1 and parts[0] == name else parts
            if not parts or PurePosixPath(member.filename).is_absolute() or ".." in parts:
                raise ValueError(f"{archive.name}: unsafe member path {member.filename!r}")
            dest = out.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def fetch_grouplens(name: str, cache_dir: str | Path) -> Path:
    """Return `<cache_dir>/<name>`, downloading the GroupLens zip on first use and checking its published md5.

    A mismatch raises `movielens.ChecksumError` and leaves nothing but the lock file; a dataset without a known md5
    is accepted and its sha256 logged.
    """
    if name not in GROUPLENS:
        raise ValueError(f"data.name: unknown GroupLens dataset {name!r}; choose from {list(GROUPLENS)}")
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if (target / "SOURCE").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{name}.lock")):
        if (target / "SOURCE").exists():  # another process fetched it while we waited
            return target
        url, md5 = GROUPLENS[name]
        with atomic_dir(target) as tmp, tempfile.TemporaryDirectory(dir=cache_dir) as download:
            archive = Path(download) / f"{name}.zip"
            log.info("Fetching %s from %s", name, url)
            movielens.download_url(url, archive)
            digest = file_digest(archive, "md5")
            if md5 is None:
                log.warning("%s: no published md5 to check; sha256 %s", url, file_digest(archive))
            elif digest != md5:
                raise movielens.ChecksumError(f"{url}: md5 {digest} != published {md5}; cache left untouched")
            _extract(archive, name, tmp)
            (tmp / "SOURCE").write_text("grouplens\n")
    return target


LOADERS: dict[str, Callable[[str | Path], MovieLensTables]] = {
    "ml-1m": load_ml1m,
    "ml-20m": load_ml_csv,
    "ml-25m": load_ml_csv,
    "ml-latest-small": load_ml_csv,
}
