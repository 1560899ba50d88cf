"""On-disk cache of tokenized samples: `<data_dir>/cache/<key>/` with one `.npy` per column (a ragged column as
`<name>.flat.npy` + `<name>.offsets.npy`) and `meta.json`, keyed by the data fingerprint and the tokenizer's identity,
written atomically (temp dir + rename) under a file lock, so parallel jobs preparing the same cache build it once and
a failed build leaves nothing behind. Read back memory-mapped: a warm start reads only what the Dataset serves."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from m6rec.data.ragged import Ragged
from m6rec.utils.files import atomic_dir, file_digest, write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = "samples-v2"  # bump when rendering or tokenizing changes what the same settings produce
CACHE_FORMAT = "npy-v1"  # the on-disk layout (in the cache key only: the samples, and so the fingerprint, stay)
Columns = dict[str, Any]  # name → 1-D array, or ragged int rows (`Ragged` or a list of 1-D arrays, e.g. input_ids)


def data_fingerprint(raw_files, settings: dict[str, Any]) -> str:
    """16 hex digits of the cache version, the raw files' names and contents, and the sample `settings`."""
    h = hashlib.sha256(f"{CACHE_VERSION}\n".encode())
    for path in raw_files:
        h.update(f"{path.name}:{file_digest(path)}\n".encode())
    h.update(repr(sorted((k, str(v)) for k, v in settings.items())).encode())
    return h.hexdigest()[:16]


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
    """`<data_dir>/cache/<key>`, key = hash(cache version and format, data fingerprint, tokenizer identity)."""
    key = f"{CACHE_VERSION}|{CACHE_FORMAT}|{fingerprint}|{tokenizer_identity(tokenizer)}"
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(data_dir) / "cache" / key


def write_samples(path: str | Path, columns: Columns, meta: dict[str, Any]) -> None:
    """Write `columns` and `meta` into the folder `path`, which appears complete or not at all."""
    with atomic_dir(path) as tmp:
        for name, values in columns.items():
            if isinstance(values, (list, Ragged)):  # ragged: flat values + int64 offsets
                flat, offsets = Ragged.from_rows(values).compact()
                np.save(tmp / f"{name}.flat.npy", np.ascontiguousarray(flat), allow_pickle=False)
                np.save(tmp / f"{name}.offsets.npy", offsets, allow_pickle=False)
            else:
                np.save(tmp / f"{name}.npy", np.asarray(values), allow_pickle=False)
        write_json_atomic(tmp / "meta.json", {**meta, "columns": list(columns)})


def read_samples(path: str | Path) -> tuple[Columns, dict[str, Any]]:
    """The columns (ragged ones as `Ragged` over a memory-mapped flat array) and meta written by `write_samples`."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    columns: Columns = {}
    for name in meta["columns"]:
        if (path / f"{name}.npy").is_file():
            columns[name] = np.load(path / f"{name}.npy", allow_pickle=False)
        else:
            flat = np.load(path / f"{name}.flat.npy", mmap_mode="r", allow_pickle=False)
            columns[name] = Ragged.from_offsets(flat, np.load(path / f"{name}.offsets.npy", allow_pickle=False))
    return columns, meta


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
