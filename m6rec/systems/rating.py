"""RatingSystem: regress the raw rating of the joint (user, candidate) prompt with MSE; RMSE / MAE."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from m6rec.models.scorer import TextScorer
from m6rec.systems.base import TaskSystem


def rating_metrics() -> nn.ModuleDict:
    """ "val" and "test" collections of RMSE and MAE, logged as `<stage>/rmse`, `<stage>/mae`."""
    return nn.ModuleDict(
        {
            stage: MetricCollection(
                {"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()},
                prefix=f"{stage}/",
                compute_groups=False,
            )
            for stage in ("val", "test")
        }
    )


class RatingObjective:
    """The rating loss and evaluation of a system whose forward(batch) returns one predicted rating per row (its
    `metrics` from `rating_metrics()`): MSE against `ratings`; RMSE and MAE (predictions not clipped)."""

    metrics: nn.ModuleDict

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(self(batch), batch["ratings"])

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        predictions = self(batch)
        self.metrics[stage].update(predictions, batch["ratings"])
        return {"rating": batch["ratings"], "prediction": predictions}


class RatingSystem(RatingObjective, TaskSystem):
    """One objective: mean squared error between the scorer's output and `batch["ratings"]` (explicit feedback).

    The head's bias starts at `init_rating` (about the mean MovieLens rating), so training starts from the mean
    predictor instead of spending its first thousands of steps moving the bias from 0 to ~3.5. Predictions are not
    clipped to the rating scale.
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
        init_rating: float = 3.5,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"], logger=False)
        self.model = TextScorer(backbone, backbone.config.hidden_size, num_outputs=1, pooling=pooling)
        nn.init.constant_(self.model.head.bias, float(init_rating))
        self.metrics = rating_metrics()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"])

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "hparams", {}).get("implicit"):
            raise ValueError("data.implicit: the rating task needs explicit ratings (set data.implicit=false)")
