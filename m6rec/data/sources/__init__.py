"""Raw interaction data, one module per format, each parsed into the canonical `MovieLensTables`; `registry` maps
`data.dataset` to its loader, where its files come from and which files identify it."""

from m6rec.data.sources.amazon import load_amazon
from m6rec.data.sources.grouplens import (
    fetch_grouplens,
    load_atomic,
    load_atomic_dir,
    load_ml1m,
    load_ml_csv,
    load_table,
    load_table_dir,
)
from m6rec.data.sources.movielens import MovieLensTables, fetch_ml100k, load_ml100k
from m6rec.data.sources.registry import LOADERS

__all__ = [
    "LOADERS",
    "MovieLensTables",
    "fetch_grouplens",
    "fetch_ml100k",
    "load_amazon",
    "load_atomic",
    "load_atomic_dir",
    "load_ml100k",
    "load_ml1m",
    "load_ml_csv",
    "load_table",
    "load_table_dir",
]
