"""TaskSystem: what every task's LightningModule shares — the loss/evaluate contract, optimizer and scheduler
partials, parameter-count logging, epoch-end logging of the val/test metric collections, adapter-only checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from m6rec.peft import count_parameters
from m6rec.peft.checkpoint import AdapterOnlyCheckpoints


class TaskSystem(AdapterOnlyCheckpoints, L.LightningModule):
    """Subclasses set `self.model` (the nn.Module that is trained) and `self.metrics` (a ModuleDict with "val" and
    "test" metric collections whose compute() returns a flat dict of prefixed values), and implement `loss(batch)` and
    `evaluate(batch, stage)`; MultiTaskSystem drives several of them through the same three methods."""

    model: nn.Module
    metrics: nn.ModuleDict

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    # ------------------------------------------------------------------ the task contract
    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of one batch (a scalar)."""
        raise NotImplementedError(f"{type(self).__name__} does not train: run it with train=false")

    def evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor] | None:
        """Update `self.metrics[stage]` with one evaluation batch; return per-row values a score dump records (the
        target's label / rating and the score the metrics saw; m6rec.metrics.score_dump), or None."""
        raise NotImplementedError

    def on_evaluation_start(self, datamodule: L.LightningDataModule) -> None:
        """Runs before each validation / test epoch (e.g. embed the item catalogue); nothing by default."""

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The epoch's metric values (synced across ranks by torchmetrics), then reset for the next epoch."""
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        return values

    # ------------------------------------------------------------------ Lightning hooks built on the contract
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(next(iter(batch.values()))))  # rows of any key
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        return self.evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        return self.evaluate(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.on_evaluation_start(self.trainer.datamodule)

    def on_test_epoch_start(self) -> None:
        self.on_evaluation_start(self.trainer.datamodule)

    def _log_epoch(self, stage: str) -> None:
        values = self.epoch_metrics(stage)
        self.log_dict(values, prog_bar=True, sync_dist=True)  # identical on every rank; sync keeps Lightning quiet

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_fit_start(self) -> None:
        """Log what is trained (parameter counts) and on what (dataset statistics and fingerprint)."""
        record = {f"params/{k}": v for k, v in count_parameters(self.model).items()}
        datamodule = self.trainer.datamodule
        record.update({f"data/{k}": v for k, v in getattr(datamodule, "stats", {}).items()})
        for logger in self.loggers:
            logger.log_hyperparams(record)

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)  # no weight decay on biases and norms
        if self.optimizer_factory is None:
            raise ValueError("task.optimizer: required for training")
        optimizer = self.optimizer_factory(params=[{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, num_training_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Norm clipping under FSDP goes through FSDP's own sharded `clip_grad_norm_` (Lightning's FSDP precision
        plugin refuses `norm`: found on an H100, docs/performance.md); everything else is Lightning's default."""
        wrapped = getattr(self.trainer.strategy, "model", None)
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and hasattr(wrapped, "clip_grad_norm_"):
            wrapped.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
