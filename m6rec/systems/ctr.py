"""CTRSystem: train a TextScorer to predict P(like | user text, item text) with BCE; AUC / GAUC / LogLoss / accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from m6rec.metrics.gauc import GroupAUROC
from m6rec.models.scorer import TextScorer
from m6rec.systems.base import TaskSystem


class CTRSystem(TaskSystem):
    """One objective: binary cross-entropy on the score of the joint (user, candidate) prompt."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
    ):
        super().__init__(optimizer, scheduler)
        # Only plain values go into checkpoints (they load with weights_only=True); the run's resolved config
        # records the optimizer and scheduler.
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"], logger=False)
        self.model = TextScorer(backbone, backbone.config.hidden_size, num_outputs=1, pooling=pooling)
        self.metrics = nn.ModuleDict({
            stage: MetricCollection({"auc": BinaryAUROC(), "gauc": GroupAUROC(), "acc": BinaryAccuracy(),
                                     "logloss": MeanMetric()}, prefix=f"{stage}/", compute_groups=False)
            for stage in ("val", "test")
        })  # fmt: skip

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"])

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["labels"])

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        logits, labels = self(batch), batch["labels"]
        metrics, probs = self.metrics[stage], torch.sigmoid(logits)
        metrics["logloss"].update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
        metrics["auc"].update(probs, labels.long())
        metrics["acc"].update(probs, labels.long())
        metrics["gauc"].update(probs, labels.long(), indexes=batch["user_ids"])  # per-user AUC, averaged
