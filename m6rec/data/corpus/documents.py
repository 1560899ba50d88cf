"""Documents of a text corpus: `.txt` (one document per line), `.jsonl` (one object per line, a text field) and
`.parquet` (a text column) files, plus a corpus derived from a behaviour log's training split."""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from m6rec.data.protocol.history import recent_training_history
from m6rec.data.protocol.splits import TRAIN
from m6rec.data.text.render import render_item_text
from m6rec.utils.files import file_digest

SUFFIXES = (".txt", ".jsonl", ".parquet")


def expand_files(patterns: Sequence[str]) -> list[Path]:
    """Every glob pattern (`**` recurses) expanded and sorted, in pattern order, duplicates dropped.

    Raises ValueError for a pattern that matches no file or a file whose type is not one of SUFFIXES.
    """
    paths: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
        if not matches:
            raise ValueError(f"data.files: no file matches {str(pattern)!r}")
        for path in matches:
            if path.suffix not in SUFFIXES:
                raise ValueError(f"data.files: {path}: unsupported file type {path.suffix!r}; use {list(SUFFIXES)}")
            paths.setdefault(path, None)
    return list(paths)


def read_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """The non-blank documents of one file, streamed; a one-line ValueError names the file (and line) of bad input."""
    try:
        if path.suffix == ".parquet":
            yield from _parquet_documents(path, text_field)
        else:
            yield from _line_documents(path, text_field if path.suffix == ".jsonl" else None)
    except OSError as err:
        raise ValueError(f"data.files: cannot read {path}: {err.strerror or err}") from err


def _line_documents(path: Path, text_field: str | None) -> Iterator[str]:
    """One document per line (the line itself, or the `text_field` of its JSON object); blank lines are skipped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({err.reason})") from None
            if text_field is None:
                text = line.rstrip("\r\n")
            elif not line.strip():
                continue
            else:
                text = _json_text(line, text_field, f"{path}:{lineno}")
            if text.strip():
                yield text


def _json_text(line: str, field: str, where: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(obj, dict) or field not in obj:
        raise ValueError(f"{where}: no {field!r} field (data.text_field)")
    if not isinstance(obj[field], str):
        raise ValueError(f"{where}: field {field!r} is {type(obj[field]).__name__}, not a string (data.text_field)")
    return obj[field]


def _parquet_documents(path: Path, field: str, batch_rows: int = 4096) -> Iterator[str]:
    """The `field` column of a parquet file, read in record batches; null values are skipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowException as err:
        raise ValueError(f"data.files: cannot read {path} as parquet ({err})") from None
    schema = parquet.schema_arrow
    if field not in schema.names:
        raise ValueError(f"{path}: no column {field!r} (data.text_field); columns: {schema.names}")
    if not (pa.types.is_string(schema.field(field).type) or pa.types.is_large_string(schema.field(field).type)):
        raise ValueError(f"{path}: column {field!r} is {schema.field(field).type}, not a string (data.text_field)")
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[field]):
        for text in batch.column(0).to_pylist():
            if text is not None and text.strip():
                yield text


class BehaviourCorpus:
    """Text derived from a BehaviourLogDataModule's TRAINING split only: the text of every item that has a training
    interaction, then one sentence per observed training interaction, rendered with the CTR templates (history = the
    user's earlier training interactions, candidate = the interaction's own item). No validation/test event, and no
    item seen only outside training, contributes anything."""

    def __init__(self, module, chunk_rows: int = 20_000):
        self.module, self.chunk_rows = module, chunk_rows

    @cached_property
    def _train_events(self) -> tuple[pd.DataFrame, list[list[tuple[int, float]]]]:
        samples = self.module.samples()
        is_train = (samples["split"].to_numpy() == TRAIN) & samples["observed"].to_numpy(bool)
        train = samples[is_train].reset_index(drop=True)
        histories = recent_training_history(train, np.ones(len(train), bool), self.module.hparams.history_len)
        return train, histories

    def item_texts(self) -> list[str]:
        train, _ = self._train_events
        items = self.module.tables.items
        items = items[items["item_id"].isin(set(train["item_id"].tolist()))].sort_values("item_id")
        return [render_item_text(row, self.module.templates) for row in items.to_dict("records")]

    def documents(self) -> Iterator[str]:
        yield from self.item_texts()
        train, histories = self._train_events
        for lo in range(0, len(train), self.chunk_rows):
            hi = lo + self.chunk_rows
            yield from self.module.render_texts(train.iloc[lo:hi], histories[lo:hi])

    @property
    def fingerprint(self) -> str:
        """Hash of the raw files and of the settings that change the derived text."""
        h = hashlib.sha256()
        raw_dir = self.module.raw_dir
        for path in sorted(p for p in raw_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(f"{path.name}:{file_digest(path)}\n".encode())
        hp = self.module.hparams
        keys = (
            "dataset",
            "split",
            "split_ratios",
            "split_seed",
            "train_fraction",
            "k_core",
            "implicit",
            "negatives",
            "history_len",
        )
        h.update(repr([(k, str(hp.get(k))) for k in keys] + sorted(self.module.templates.as_dict().items())).encode())
        return h.hexdigest()[:16]
