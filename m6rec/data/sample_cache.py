"""On-disk cache of tokenized samples: `<data_dir>/cache/<key>/samples.parquet` + `meta.json`, keyed by the data
fingerprint and the tokenizer's identity, written atomically (temp dir + rename) under a file lock, so parallel jobs
preparing the same cache build it once and a failed build leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from m6rec.utils.files import atomic_dir, write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = "samples-v2"  # bump when rendering or tokenizing changes what the same settings produce
Columns = dict[str, Any]  # name → 1-D array, or a list of 1-D int arrays (ragged, e.g. input_ids)


def tokenizer_identity(tokenizer: Any) -> str:
    """A hash of everything that decides the tokenizer's ids: its full serialisation (fast tokenizers) or its
    vocabulary, plus the special tokens."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())).encode())
    return h.hexdigest()[:16]


def cache_dir(data_dir: str | Path, fingerprint: str, tokenizer: Any) -> Path:
    """`<data_dir>/cache/<key>`, key = hash(cache version, data fingerprint, tokenizer identity)."""
    key = hashlib.sha256(f"{CACHE_VERSION}|{fingerprint}|{tokenizer_identity(tokenizer)}".encode()).hexdigest()[:16]
    return Path(data_dir) / "cache" / key


def _arrow(values: Any) -> pa.Array:
    if isinstance(values, list):  # ragged: one large_list<int32> column
        lengths = np.fromiter(map(len, values), np.int64, count=len(values))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(values).astype(np.int32) if values else np.zeros(0, np.int32)
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))
    return pa.array(np.asarray(values))


def write_samples(path: str | Path, columns: Columns, meta: dict[str, Any]) -> None:
    """Write `columns` and `meta` into the folder `path`, which appears complete or not at all."""
    with atomic_dir(path) as tmp:
        pq.write_table(pa.table({name: _arrow(v) for name, v in columns.items()}), tmp / "samples.parquet")
        write_json_atomic(tmp / "meta.json", {**meta, "columns": list(columns)})


def read_samples(path: str | Path) -> tuple[Columns, dict[str, Any]]:
    """The columns (ragged ones as lists of int32 arrays) and meta written by `write_samples`."""
    path = Path(path)
    table = pq.read_table(path / "samples.parquet")
    columns: Columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_large_list(column.type):
            offsets = column.offsets.to_numpy()
            flat = column.values.to_numpy(zero_copy_only=False)
            bounds = offsets.tolist()
            columns[name] = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns, json.loads((path / "meta.json").read_text())


def load_or_build(path: str | Path, build: Callable[[], tuple[Columns, dict[str, Any]]]) -> tuple[Columns, dict, bool]:
    """Read the cache at `path`, or build and write it under `<path>.lock` (one builder; the others wait and read).
    Returns (columns, meta, whether they came from the cache)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return (*read_samples(path), True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if (path / "meta.json").is_file():  # built by another process while we waited
            return (*read_samples(path), True)
        columns, meta = build()
        write_samples(path, columns, meta)
        log.info("Sample cache written: %s", path)
        return columns, meta, False
