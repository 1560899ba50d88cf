"""`eval.dump_scores`: every test row's scores in `<run dir>/scores_test.parquet`, so anyone can recompute the metrics.

Columns: user_id, item_id (the target / the candidate), then what the system's `evaluate` returned for the row —
CTR / zero-shot: label, score (the probability the AUC saw); rating: rating, prediction; retrieval: rank (0-based,
m6rec.metrics.ranking's rule: pessimistic ties, masked items left out), score (the target's), top_items and
top_scores (the `top_k` best non-masked items, best first); ID ranking (ItemRankingSystem, one target per query):
rank only, with raw user and item ids the system returns itself. Rows are sorted by (user_id, item_id), whatever the
number of ranks: under DDP each rank writes its own part and rank 0 merges them after a barrier (the run directory
must be shared, as Hydra's is on one node).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

log = logging.getLogger(__name__)


class ScoreDump(L.Callback):
    """Collect what `test_step` returns per batch (+ the batch's user and item ids); write it at the test epoch end."""

    def __init__(self, out_dir: str | Path, top_k: int = 100):
        self.out_dir, self.top_k = Path(out_dir), int(top_k)
        self.parts: list[dict[str, np.ndarray]] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.parts = []
        if hasattr(pl_module, "dump_top_k"):  # retrieval: rank the top items only when asked
            pl_module.dump_top_k = self.top_k

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(pl_module, "dump_top_k"):
            pl_module.dump_top_k = 0

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, Mapping):
            ids = {"user_id": batch["user_ids"], "item_id": batch["item_ids"]} if "user_ids" in batch else {}
            self.parts.append({k: _numpy(v) for k, v in {**ids, **outputs}.items()})

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.out_dir / "scores_test.parquet"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        parts = (
            [path]
            if trainer.world_size == 1
            else [self.out_dir / f"scores_test.rank{r}.parquet" for r in range(trainer.world_size)]
        )
        if self.parts:
            _write(_table(self.parts), parts[trainer.global_rank])
        if trainer.world_size > 1:  # every rank reaches the barriers, even one without rows
            trainer.strategy.barrier("score_dump")
            written = [p for p in parts if p.is_file()]
            if trainer.is_global_zero and written:
                _write(pa.concat_tables([pq.read_table(p) for p in written]), path)
                for part in written:
                    part.unlink()
            trainer.strategy.barrier("score_dump_merged")
        if trainer.is_global_zero:
            if path.is_file():
                log.info("Test scores dumped to %s", path)
            else:
                log.warning("eval.dump_scores: %s returns no per-row scores; nothing dumped", type(pl_module).__name__)


def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().float().cpu().numpy() if values.is_floating_point() else values.detach().cpu().numpy()


def _table(parts: list[dict[str, np.ndarray]]) -> pa.Table:
    """One table from the batches' columns; 2-D columns (top items / scores) become list columns, -inf entries (masked
    items padding a short catalogue) dropped."""
    columns: dict[str, Any] = {}
    for name in parts[0]:
        values = np.concatenate([p[name] for p in parts])
        columns[name] = values if values.ndim == 1 else list(values)
    if "top_scores" in columns:
        keep = [np.isfinite(s) for s in columns["top_scores"]]
        columns["top_items"] = [i[k] for i, k in zip(columns["top_items"], keep, strict=True)]
        columns["top_scores"] = [s[k] for s, k in zip(columns["top_scores"], keep, strict=True)]
    return pa.table(columns)


def _write(table: pa.Table, path: Path) -> None:
    """`table` sorted by (user_id, item_id), written to `path` atomically."""
    table = table.sort_by([("user_id", "ascending"), ("item_id", "ascending")])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
