"""Raw interaction data, one module per format, each parsed into the canonical `InteractionTables`; `registry` maps
`data.dataset` to its loader, where its files come from and which files identify it."""

from m6rec.data.sources.amazon import load_amazon
from m6rec.data.sources.atomic import load_atomic, load_atomic_dir
from m6rec.data.sources.grouplens import fetch_grouplens, load_ml1m, load_ml_csv
from m6rec.data.sources.movielens import fetch_ml100k, load_ml100k
from m6rec.data.sources.registry import LOADERS
from m6rec.data.sources.table import load_table, load_table_dir
from m6rec.data.sources.tables import InteractionTables

__all__ = [
    "LOADERS",
    "InteractionTables",
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
