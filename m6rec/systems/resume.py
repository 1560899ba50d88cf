"""Exact resume: the RNG states in every checkpoint (restored at the first training batch after a resume, so data
setup and the sanity check cannot consume them), the train loader's position re-applied, and `ckpt_path=last` → the
newest checkpoint of earlier runs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

RNG_KEY = "m6rec_rng"


class ResumeState(L.Callback):
    """Save python / numpy / torch RNG states with each checkpoint; restore them just before the first training batch
    of a resumed fit. Also re-apply the train loader's saved position (m6rec.data.datamodules.resumable) at train start:
    Lightning skips it when `estimated_stepping_batches` (a scheduler's length) built the loader before the restore."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] = []

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        version, state, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint[RNG_KEY] = {  # plain values and tensors: the checkpoint still loads with weights_only=True
            "python": [version, list(state), gauss],
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(RNG_KEY)
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._loader_states = list(fit_loop.get("combined_loader", []))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.train_dataloader
        loaders = list(loaders.values()) if isinstance(loaders, dict) else loaders  # multi-task: one per task
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        stateful = [dl for dl in loaders if hasattr(dl, "load_state_dict") and hasattr(dl, "state_dict")]
        for loader, state in zip(stateful, self._loader_states, strict=False):
            loader.load_state_dict(state)
        self._loader_states = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        if self._pending is not None:
            version, state, gauss = self._pending["python"]
            random.setstate((version, tuple(state), gauss))
            kind, keys, pos, has_gauss, cached = self._pending["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            torch.set_rng_state(self._pending["torch"])
            self._pending = None


def newest_checkpoint(output_dir: Path, multirun: bool) -> Path | None:
    """`ckpt_path=last`: the most recently written checkpoint of a run of this task (`runs/*`), or of the same job
    number in any sweep (`multiruns/*/<num>`, its own folder included: a requeued SLURM job keeps its folder):
    `checkpoints/*.ckpt` or Lightning's `hpc_ckpt_*.ckpt`."""
    jobs = output_dir.parent.parent.glob(f"*/{output_dir.name}") if multirun else output_dir.parent.glob("*")
    found = [p for job in jobs for p in [*job.glob("checkpoints/*.ckpt"), *job.glob("hpc_ckpt_*.ckpt")]]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


class ResumableModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that, resumed into a new run folder, still knows the best score and files so far
    (Lightning restores them only when `dirpath` is unchanged, so a resumed run would take its next epoch as best)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) != self.dirpath:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = state_dict.get("best_k_models", {})
