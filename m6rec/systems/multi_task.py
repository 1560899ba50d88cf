"""MultiTaskSystem: several task systems share one (PEFT-adapted) backbone; loss = Σ_k w_k · L_k.

M6-Rec trains its tasks jointly on one language model; the weighted sum covers its α·L_mt + β·L_ad + L_ft form.
Each part keeps its own head, loss and metrics (`m6rec.systems.*`); metrics are logged as `<stage>/<task>/<name>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from m6rec.systems.base import TaskSystem


class MultiTaskSystem(TaskSystem):
    """`tasks` maps a name (the key of the matching DataModule in MultiTaskDataModule) to `{"system": a partial task
    system taking `backbone`, "weight": w}`. A task without a batch in a step (CombinedLoader mode max_size) or with
    weight 0 adds 0 · (its own parameters) to the loss, so DDP sees every parameter used in every step."""

    def __init__(
        self,
        backbone: nn.Module,
        tasks: Mapping[str, Mapping[str, Any]],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__(optimizer, scheduler)
        if not tasks:
            raise ValueError("task.tasks: needs at least one task")
        weights = {}
        for name, spec in tasks.items():
            if "system" not in spec:
                raise ValueError(f"task.tasks.{name}: needs a `system` (a task config with _partial_: true)")
            weights[name] = float(spec.get("weight", 1.0))
            if weights[name] < 0:
                raise ValueError(f"task.tasks.{name}.weight: must be >= 0, got {weights[name]}")
        self.save_hyperparameters({"weights": weights}, logger=False)
        self.weights = weights
        self.names = list(tasks)
        self.parts = nn.ModuleDict({name: tasks[name]["system"](backbone=backbone) for name in self.names})
        self.model = nn.ModuleDict({name: part.model for name, part in self.parts.items()})  # backbone counted once
        shared = {id(p) for p in backbone.parameters()}
        self._own = {name: [p for p in part.parameters() if id(p) not in shared] for name, part in self.parts.items()}

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for name, part in self.parts.items():
            task_batch = batch.get(name)
            if task_batch is None or self.weights[name] == 0:
                total = total + 0.0 * sum(p.sum() for p in self._own[name] if p.requires_grad)
                continue
            loss = part.loss(task_batch)
            self.log(f"train/{name}/loss", loss, batch_size=_batch_size(task_batch))
            total = total + self.weights[name] * loss
        self.log("train/loss", total, prog_bar=True, batch_size=1)
        return total

    def on_evaluation_start(self, datamodule) -> None:
        for name, part in self.parts.items():
            part.on_evaluation_start(datamodule.datamodules[name])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.parts[self.names[dataloader_idx]].evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.parts[self.names[dataloader_idx]].evaluate(batch, "test")

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Each task's metrics as `<stage>/<task>/<name>`."""
        values = {}
        for name, part in self.parts.items():
            for key, value in part.epoch_metrics(stage).items():
                values[f"{stage}/{name}/{key.split('/', 1)[1]}"] = value
        return values

    def _log_epoch(self, stage: str) -> None:
        self.log_dict(self.epoch_metrics(stage), prog_bar=True, sync_dist=True, add_dataloader_idx=False)


def _batch_size(batch: Mapping[str, Any]) -> int:
    return len(batch["input_ids"])
