"""Amazon Reviews 2018 (https://nijianmo.github.io/amazon/index.html) and 2023 (https://amazon-reviews-2023.github.io/)
as `InteractionTables`, streamed: one JSON object per line (`.json`/`.jsonl`, optionally `.gz`), never a whole file in
memory; only the needed fields are kept, in compact arrays, and metadata is parsed only for items seen in reviews.

Neither release has a checksummed official mirror, so nothing is fetched: download `<Category>.json.gz` +
`meta_<Category>.json.gz` (2018) or `<Category>.jsonl.gz` + `meta_<Category>.jsonl.gz` (2023) and set `data.root`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m6rec.data.sources.tables import InteractionTables

log = logging.getLogger(__name__)

URLS = {"2018": "https://nijianmo.github.io/amazon/index.html", "2023": "https://amazon-reviews-2023.github.io/"}
_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json")


@dataclass(frozen=True)
class AmazonFormat:
    """The JSON keys of one release (reviews and metadata) and its time unit."""

    user: str
    item: str
    rating: str
    time: str
    units_per_second: int
    review: str
    summary: str
    categories: str
    main_category: str
    brand: str


FORMATS = {
    "2018": AmazonFormat(
        "reviewerID", "asin", "overall", "unixReviewTime", 1, "reviewText", "summary", "category", "main_cat", "brand"
    ),
    "2023": AmazonFormat(
        "user_id", "parent_asin", "rating", "timestamp", 1000, "text", "title", "categories", "main_category", "store"
    ),
}


def missing_root_message(version: str) -> str:
    """The one-line error for a missing `data.root`: where to download the files."""
    suffix = ".json.gz" if str(version) == "2018" else ".jsonl.gz"
    return (
        f"data.root: required for Amazon Reviews {version} (no checksummed official mirror to fetch from): "
        f"download <Category>{suffix} and meta_<Category>{suffix} from {URLS.get(str(version), URLS['2023'])} "
        "into a folder and set data.root=<folder> data.source.category=<Category>"
    )


def _check_version(version: str | int) -> str:
    if str(version) not in FORMATS:
        raise ValueError(f"data.source.version: Amazon Reviews version must be one of {list(FORMATS)}, got {version!r}")
    return str(version)


def amazon_files(root: str | Path, version: str | int, category: str) -> tuple[Path, Path | None]:
    """The review file of `category` under `root` and its metadata file (None when absent); `<Category>_5` (2018's
    5-core files) reads `meta_<Category>`."""
    root, version = Path(root), _check_version(version)
    if not category:
        raise ValueError("data.source.category: an Amazon category is required, e.g. All_Beauty")

    def first(stem: str) -> Path | None:
        return next((root / f"{stem}{s}" for s in _SUFFIXES if (root / f"{stem}{s}").is_file()), None)

    reviews = first(category)
    if reviews is None:
        raise FileNotFoundError(
            f"{root}: no {category}.jsonl(.gz) or {category}.json(.gz) (Amazon Reviews {version}); download it from "
            f"{URLS[version]} into data.root"
        )
    return reviews, first(f"meta_{category.removesuffix('_5')}")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a possibly gzipped file; a corrupt or truncated gzip is a one-line error."""
    number = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as f:
            for number, line in enumerate(f, 1):  # noqa: B007 (number is reported on error)
                yield number, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}:{number + 1}: corrupt or truncated gzip ({err})") from None


def _object(path: Path, number: int, line: bytes) -> dict[str, Any] | None:
    """One line as a JSON object (None for a blank line); bad bytes or JSON name the line and column."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid UTF-8 at column {err.start + 1}") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid JSON at column {err.pos + 1} ({err.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(obj: dict[str, Any], key: str, path: Path, number: int) -> Any:
    if key not in obj or obj[key] is None:
        raise ValueError(f"{path}:{number}: missing key '{key}'")
    return obj[key]


def _id(obj: dict[str, Any], key: str, path: Path, number: int) -> str:
    value = _field(obj, key, path, number)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}:{number}: key '{key}' must be a non-empty string, got {value!r}")
    return value


def _number(obj: dict[str, Any], key: str, path: Path, number: int) -> float:
    value = _field(obj, key, path, number)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{path}:{number}: key '{key}' must be a number >= 0, got {value!r}")
    return float(value)


def _text(value: Any) -> str:
    """A metadata value as one line of text (lists joined by spaces)."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v)
    return " ".join(str(value or "").split())


def _read_reviews(path: Path, f: AmazonFormat, keep_text: bool) -> tuple[dict[str, Any], dict[str, int], dict]:
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    cols: dict[str, Any] = {
        "user": array("q"),
        "item": array("q"),
        "rating": array("f"),
        "time": array("q"),
        "review": [],
        "summary": [],
    }
    for number, line in _lines(path):
        obj = _object(path, number, line)
        if obj is None:
            continue
        user, item = _id(obj, f.user, path, number), _id(obj, f.item, path, number)
        cols["rating"].append(_number(obj, f.rating, path, number))
        cols["time"].append(int(_number(obj, f.time, path, number)) // f.units_per_second)
        cols["user"].append(users.setdefault(user, len(users) + 1))
        cols["item"].append(items.setdefault(item, len(items) + 1))
        if keep_text:
            cols["review"].append(_text(obj.get(f.review)))
            cols["summary"].append(_text(obj.get(f.summary)))
    if not items:
        raise ValueError(f"{path}: no reviews")
    return cols, items, users


def _read_meta(path: Path | None, f: AmazonFormat, seen: dict[str, int]) -> dict[int, dict[str, str]]:
    """Metadata of the seen items only: a line is parsed only when an id it mentions was seen (first line wins)."""
    meta: dict[int, dict[str, str]] = {}
    if path is None:
        log.warning("No Amazon metadata file next to the reviews: titles are the item ids")
        return meta
    pattern = re.compile(rb'"' + re.escape(f.item.encode()) + rb'"\s*:\s*"([^"\\]*)"')
    for number, line in _lines(path):
        mentioned = pattern.findall(line)
        if mentioned and not any(m.decode("utf-8", "replace") in seen for m in mentioned):
            continue
        obj = _object(path, number, line)
        if obj is None:
            continue
        item = seen.get(_id(obj, f.item, path, number))
        if item is None or item in meta:
            continue
        categories = [_text(c) for c in obj.get(f.categories) or [] if _text(c)]
        meta[item] = {
            "title": _text(obj.get("title")),
            "genres": "|".join(categories) or _text(obj.get(f.main_category)),
            "category": categories[-1] if categories else _text(obj.get(f.main_category)),
            "description": _text(obj.get("description")),
            "brand": _text(obj.get(f.brand)),
        }
    return meta


def load_amazon(root: str | Path, version: str | int, category: str, keep_text: bool = True) -> InteractionTables:
    """Amazon Reviews `version` ("2018" | "2023") of `category` under `root`, streamed.

    Interactions: user_id/item_id (1..N in order of first appearance; raw ids in the tables' `raw_id`), rating,
    timestamp (seconds) and, with `keep_text`, the `review` text and its `summary`. Items: title, year (""), genres
    (categories joined by "|"), category (the most specific one), description, brand. Users carry no attributes.
    """
    version = _check_version(version)
    f = FORMATS[version]
    reviews, meta_path = amazon_files(root, version, category)
    cols, items, users = _read_reviews(reviews, f, keep_text)
    meta = _read_meta(meta_path, f, items)
    if meta_path is not None and len(meta) < len(items):
        log.warning(
            "%s: no metadata for %d of %d items (their title is the item id)",
            meta_path.name,
            len(items) - len(meta),
            len(items),
        )

    interactions = pd.DataFrame(
        {
            "user_id": np.frombuffer(cols["user"], dtype=np.int64),
            "item_id": np.frombuffer(cols["item"], dtype=np.int64),
            "rating": np.frombuffer(cols["rating"], dtype=np.float32),
            "timestamp": np.frombuffer(cols["time"], np.int64),
        }
    )
    if keep_text:
        interactions["review"], interactions["summary"] = cols["review"], cols["summary"]
    empty = {"title": "", "genres": "", "category": "", "description": "", "brand": ""}
    rows = [{"item_id": code, "raw_id": raw, **meta.get(code, empty)} for raw, code in items.items()]
    table = pd.DataFrame(rows)
    table["title"] = table["title"].where(table["title"] != "", table["raw_id"])
    table["year"] = ""
    item_table = table[["item_id", "title", "year", "genres", "category", "description", "brand", "raw_id"]]
    user_table = pd.DataFrame(
        {
            "user_id": np.arange(1, len(users) + 1, dtype=np.int64),
            "age": 0,
            "gender": "",
            "occupation": "",
            "raw_id": list(users),
        }
    )
    return InteractionTables(interactions, item_table.astype({"item_id": "int64"}), user_table)
