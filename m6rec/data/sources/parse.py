"""Reading raw tables (CSV/TSV/Parquet, GroupLens `.dat`, RecBole headers) and checking their columns; every error
is one line naming the file and the line (and the column where one applies)."""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from m6rec.data.sources import validate

_EPOCH = pd.Timestamp(0, tz="UTC")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")


def utf8_error(path: Path) -> ValueError:
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


def read_csv(path: Path, sep: str = ",", quoting: int = csv.QUOTE_MINIMAL, as_text: bool = True) -> pd.DataFrame:
    """A headed UTF-8 table; `as_text` keeps every cell as its exact text, else pandas infers dtypes (faster)."""
    text_kw = {"dtype": str, "keep_default_na": False} if as_text else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed types only where a value is bad
            return pd.read_csv(
                path, sep=sep, encoding="utf-8", engine="c", quoting=quoting, skip_blank_lines=False, **text_kw
            )
    except UnicodeDecodeError:
        raise utf8_error(path) from None
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


def read_dat(path: Path, names: list[str], as_text: bool = True) -> pd.DataFrame:
    """A GroupLens `::`-separated file (latin-1, no header, no quoting), every line's field count checked.

    `::` becomes a tab and each line gets a sentinel last field, so pandas' C parser does the work: a short line shows
    as a row whose sentinel moved left, a long one as a parser error.
    """
    require_file(path, "a GroupLens ML-1M file")
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
            io.StringIO(body),
            sep="\t",
            header=None,
            quoting=csv.QUOTE_NONE,
            engine="c",
            na_filter=False,
            skip_blank_lines=False,
            **kwargs,
        )
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


def read_any(path: Path) -> tuple[pd.DataFrame, int]:
    """A .csv / .tsv (optionally compressed) or .parquet table and the file line of its first row."""
    require_file(path, "a table named in the data config")
    name = path.name.lower()
    name = next((name.removesuffix(ext) for ext in _COMPRESSION if name.endswith(ext)), name)
    if name.endswith(".parquet"):
        try:
            return pd.read_parquet(path), 1
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise ValueError(f"{path}: {type(err).__name__}: {err}".splitlines()[0]) from None
    if name.endswith(".csv"):
        return read_csv(path), 2
    if name.endswith(".tsv"):
        return read_csv(path, sep="\t", quoting=csv.QUOTE_NONE), 2
    raise ValueError(f"{path}: unsupported table format; use .csv, .tsv or .parquet")


def check_present(df: pd.DataFrame, col: str, path: Path, offset: int, name: str | None = None) -> None:
    """An id column may not have empty cells (they would silently become an id)."""
    values = df[col]
    bad = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    if bad.any():
        raise ValueError(f"{path}:{int(bad.argmax()) + offset}: column '{name or col}' is empty")


def select_columns(path: Path, df: pd.DataFrame, wanted: list[str]) -> pd.DataFrame:
    """The `wanted` columns of `df`, or an error naming the missing ones and the header."""
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; header has {list(df.columns)}")
    return df[wanted]


# --------------------------------------------------------------------------- columns
def shown_value(value: object) -> str:
    """A cell for an error message: numbers as written (not `np.float64(nan)`), text quoted."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def to_rating(df: pd.DataFrame, col: str, path: Path, offset: int) -> pd.Series:
    """A finite rating >= 0 as float32, else an error naming the line and the value."""
    values = pd.to_numeric(df[col], errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy()) | (values.to_numpy() < 0)
    if bad.any():
        row = int(bad.argmax())
        raise ValueError(
            f"{path}:{row + offset}: column '{col}' must be a number >= 0, got {shown_value(df[col].iloc[row])}"
        )
    return values.astype("float32")


def to_seconds(df: pd.DataFrame, col: str, path: Path, offset: int) -> pd.Series:
    """Integer seconds, or ISO dates (naive = UTC) as seconds since the epoch; the first row decides which."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = s.dt.tz_localize("UTC") if s.dt.tz is None else s
    elif len(s) == 0 or pd.to_numeric(s.iloc[:1], errors="coerce").notna().all():
        return to_int(df, col, path, offset)
    else:
        dt = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    bad = dt.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise ValueError(
            f"{path}:{row + offset}: column '{col}' has invalid value {s.iloc[row]!r} (expected seconds or an ISO date)"
        )
    return ((dt - _EPOCH) // pd.Timedelta(seconds=1)).astype("int64").reset_index(drop=True)


def to_int(df: pd.DataFrame, col: str, path: Path, offset: int) -> pd.Series:
    """Column `col` as non-negative int64 (m6rec.data.sources.validate.to_int: `12.7`, `-1`, blanks are errors naming
    the line, row + `offset`)."""
    return validate.to_int(df[col], col, path, offset)


def atomic_columns(path: Path, df: pd.DataFrame, wanted: list[str]) -> pd.DataFrame:
    """RecBole headers are `name:type`; keep the wanted names or say which one is missing."""
    df = df.rename(columns=lambda c: c.split(":")[0])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; header has {list(df.columns)}")
    return df[wanted]
