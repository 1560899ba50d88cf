"""`data.dataset` → the loader that parses it, where its files come from, and which files identify it.

A loader is `fn(root, **data.source)`; `data.source` holds the loader's options (column mapping, category, …).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from m6rec.data.sources import validate
from m6rec.data.sources.amazon import amazon_files, load_amazon, missing_root_message
from m6rec.data.sources.atomic import load_atomic_dir
from m6rec.data.sources.grouplens import LOADERS as GROUPLENS_LOADERS
from m6rec.data.sources.grouplens import fetch_grouplens
from m6rec.data.sources.movielens import fetch_ml100k, load_ml100k
from m6rec.data.sources.table import expand_paths, load_table_dir
from m6rec.data.sources.tables import InteractionTables

LOADERS: dict[str, Callable[..., InteractionTables]] = {
    "ml-100k": load_ml100k,
    **GROUPLENS_LOADERS,
    "atomic": load_atomic_dir,
    "table": load_table_dir,
    "amazon": load_amazon,
}
LOCAL_ONLY = {  # datasets read from `data.root` only: what the folder must hold
    "atomic": "a folder of RecBole atomic files (<name>.inter, optional <name>.item / <name>.user)",
    "table": "the folder holding the files named in data.source (CSV/TSV/Parquet)",
}


def check_dataset(name: str) -> str:
    if name not in LOADERS:
        raise ValueError(f"data.dataset: unknown dataset {name!r}; choose from {sorted(LOADERS)}")
    return name


def check_source(name: str, source: Mapping[str, Any]) -> dict[str, Any]:
    """`data.source` checked against the loader's keyword arguments (one-line error naming the key)."""
    params = list(inspect.signature(LOADERS[check_dataset(name)]).parameters.values())[1:]  # after root
    options = [p.name for p in params]
    for key in source:
        if key not in options:
            raise ValueError(f"data.source.{key}: not an option of data.dataset={name}; options: {options}")
    for p in params:
        if p.default is inspect.Parameter.empty and p.name not in source:
            raise ValueError(f"data.source.{p.name}: required for data.dataset={name}")
    return dict(source)


def raw_dir(name: str, root: str | None, data_dir: str | Path, sources: Sequence[str], source: Mapping) -> Path:
    """The folder the loader reads: `root`, else the fetched cache; datasets that cannot be fetched need `root`."""
    check_dataset(name)
    if root is not None:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"data.root: {root} is not a folder")
        return Path(root)
    if name == "amazon":
        raise ValueError(missing_root_message(str(source.get("version", "2023"))))
    if name in LOCAL_ONLY:
        raise ValueError(f"data.root: required for data.dataset={name}: {LOCAL_ONLY[name]}")
    if name == "ml-100k":
        return fetch_ml100k(Path(data_dir), tuple(sources))
    return fetch_grouplens(name, Path(data_dir))


def load(name: str, root: Path, source: Mapping[str, Any], duplicates: str = "warn") -> InteractionTables:
    """Parse with the dataset's loader, then the shared checks (m6rec.data.sources.validate): ratings finite and
    within the declared scale, duplicate interactions per `data.duplicates`."""
    tables = LOADERS[name](root, **check_source(name, source))
    origin = (
        next(((root / f, line) for f, line in (("u.data", 1), ("ml-100k.inter", 2)) if (root / f).is_file()), None)
        if name == "ml-100k"
        else None
    )
    validate.check_ratings(tables.interactions["rating"], name, origin)
    tables.interactions = validate.handle_duplicates(tables.interactions, duplicates, origin)
    return tables


def raw_files(name: str, root: Path, source: Mapping[str, Any]) -> list[Path]:
    """The files whose bytes define the dataset (hashed into the data fingerprint)."""
    if name == "amazon":
        return [p for p in amazon_files(root, source["version"], source["category"]) if p is not None]
    if name == "table":
        named = [source.get(k) for k in ("interactions", "items", "users")]
        return sorted({p for n in named if n for p in expand_paths(root / n) if p.is_file()})
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
