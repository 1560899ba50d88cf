"""CTRSystem: train a TextScorer to predict P(like | user text, item text) with BCE; AUC / LogLoss / accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from m6rec.models.scorer import TextScorer
from m6rec.peft import count_parameters


class CTRSystem(L.LightningModule):
    """One objective: binary cross-entropy on the score of the joint (user, candidate) prompt."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
    ):
        super().__init__()
        # Only plain values go into checkpoints (they load with weights_only=True); the run's resolved config
        # records the optimizer and scheduler.
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.model = TextScorer(backbone, backbone.config.hidden_size, num_outputs=1, pooling=pooling)
        self.metrics = nn.ModuleDict({
            stage: MetricCollection({"auc": BinaryAUROC(), "acc": BinaryAccuracy(), "logloss": MeanMetric()},
                                    prefix=f"{stage}/", compute_groups=False)
            for stage in ("val", "test")
        })  # fmt: skip

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"])

    def on_fit_start(self) -> None:
        """Log what is trained (parameter counts) and on what (dataset statistics and fingerprint)."""
        record = {f"params/{k}": v for k, v in count_parameters(self.model).items()}
        datamodule = self.trainer.datamodule
        record.update({f"data/{k}": v for k, v in getattr(datamodule, "stats", {}).items()})
        for logger in self.loggers:
            logger.log_hyperparams(record)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        logits = self(batch)
        labels = batch["labels"]
        metrics = self.metrics[stage]
        losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        metrics["logloss"].update(losses)
        metrics["auc"].update(torch.sigmoid(logits), labels.long())
        metrics["acc"].update(torch.sigmoid(logits), labels.long())

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        values = self.metrics[stage].compute()  # synced across ranks by torchmetrics
        self.log_dict(values, prog_bar=True, sync_dist=True)  # identical on every rank; sync keeps Lightning quiet
        self.metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

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
