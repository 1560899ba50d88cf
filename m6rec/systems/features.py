"""Systems for the classic feature-id baselines (m6rec.models.factorization): the CTR and rating objectives and
metrics of the LM systems (CTRObjective, RatingObjective), with a model that reads `batch["features"]`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from m6rec.systems.base import TaskSystem
from m6rec.systems.ctr import CTRObjective, ctr_metrics
from m6rec.systems.rating import RatingObjective, rating_metrics


class FeatureCTRSystem(CTRObjective, TaskSystem):
    """CTR (binary cross-entropy; AUC / GAUC / LogLoss) on the logit a feature model (LR, FM, DeepFM) gives a row."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        self.metrics = ctr_metrics()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["features"])


class FeatureRatingSystem(RatingObjective, TaskSystem):
    """Rating regression (MSE; RMSE / MAE) with a feature model (biased MF, FM, …) whose `bias` starts at
    `init_rating` (about the mean MovieLens rating)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        init_rating: float = 3.5,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        nn.init.constant_(self.model.bias, float(init_rating))
        self.metrics = rating_metrics()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["features"])
