"""CTRSystem: train a TextScorer (or, with `layers_online`, a LateInteractionScorer) to predict
P(like | user text, item text) with BCE; AUC / GAUC / LogLoss / accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from m6rec.metrics.gauc import GroupAUROC
from m6rec.models.late_interaction import LateInteractionScorer
from m6rec.models.scorer import TextScorer
from m6rec.systems.base import TaskSystem


def ctr_metrics() -> nn.ModuleDict:
    """ "val" and "test" collections of AUC, GAUC, accuracy and LogLoss, logged as `<stage>/auc`, ...."""
    return nn.ModuleDict(
        {
            stage: MetricCollection(
                {"auc": BinaryAUROC(), "gauc": GroupAUROC(), "acc": BinaryAccuracy(), "logloss": MeanMetric()},
                prefix=f"{stage}/",
                compute_groups=False,
            )
            for stage in ("val", "test")
        }
    )


class CTRObjective:
    """The CTR loss and evaluation of a system whose forward(batch) returns one logit per row (its `metrics` from
    `ctr_metrics()`): binary cross-entropy against `labels`; AUC, per-user GAUC, accuracy and LogLoss."""

    metrics: nn.ModuleDict

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["labels"])

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        logits, labels = self(batch), batch["labels"]
        metrics, probs = self.metrics[stage], torch.sigmoid(logits)
        metrics["logloss"].update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
        metrics["auc"].update(probs, labels.long())
        metrics["acc"].update(probs, labels.long())
        metrics["gauc"].update(probs, labels.long(), indexes=batch["user_ids"])  # per-user AUC, averaged
        return {"label": labels, "score": probs}


class CTRSystem(CTRObjective, TaskSystem):
    """One objective: binary cross-entropy on the score of the joint (user, candidate) prompt.

    `layers_online` (task.layers_online; GPT-2 backbones): M6-Rec late interaction — the lower blocks read each
    segment alone, only the top `layers_online` blocks read the whole prompt; batches must carry `segments`
    (data=ml100k_late, or data._target_=m6rec.data.LateSegmentDataModule).

    `features` (task.features; m6rec.models.row_features.RowFeatureModel): a feature model (e.g. DeepFM) reading the
    same rows by user and item id; its logit is added to the prompt model's. Trained jointly (wide & deep), or, loaded
    from a finished run and fixed, a prior whose residual the prompt model learns (its head then starts at zero).
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
        layers_online: int | None = None,
        features: nn.Module | None = None,
    ):
        super().__init__(optimizer, scheduler)
        # Only plain values go into checkpoints (they load with weights_only=True); the run's resolved config
        # records the optimizer and scheduler.
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler", "features"], logger=False)
        if layers_online is None:
            self.model = TextScorer(backbone, backbone.config.hidden_size, num_outputs=1, pooling=pooling)
        else:
            _check_late_interaction(backbone, layers_online)
            self.model = LateInteractionScorer(backbone, layers_online)
        self.features = features
        if features is not None and not getattr(features, "trainable", True):
            for weight in self.model.head.parameters():  # a fixed prior: the sum starts at its logits, exactly
                nn.init.zeros_(weight)
        self.metrics = ctr_metrics()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.prompt_logits(batch)
        if self.features is None:
            return logits
        return logits + self.features(batch["user_ids"], batch["item_ids"])

    def prompt_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prompt model's logit per row (full attention, or late interaction over `segments`)."""
        if not isinstance(self.model, LateInteractionScorer):
            return self.model(batch["input_ids"], batch["attention_mask"])
        if "segments" not in batch:
            raise ValueError(
                "task.layers_online is set but batches have no `segments`: use data=ml100k_late or "
                "data._target_=m6rec.data.LateSegmentDataModule (experiments/ctr_late.yaml; under "
                "task=multitask, data.datamodules.ctr._target_)"
            )
        return self.model(batch["segments"])


def _check_late_interaction(backbone: nn.Module, layers_online: int) -> None:
    """Late interaction runs a GPT-2's blocks itself: the backbone must have them (`h`, `wpe`) and be adapted in
    place (LoRA, IA3, adapters, freezing), not by virtual tokens its own forward would add (prefix, prompt, option)."""
    peft_config = getattr(backbone, "active_peft_config", None)
    virtual = getattr(peft_config, "is_prompt_learning", False) or callable(getattr(backbone, "make_head", None))
    if virtual or getattr(backbone, "h", None) is None or getattr(backbone, "wpe", None) is None:
        raise ValueError(
            f"task.layers_online={layers_online}: late interaction needs a GPT-2 backbone adapted in "
            "place (peft=none|frozen|top_k_layers|lora|ia3|adapter), got "
            f"{type(backbone).__name__}{' with virtual tokens' if virtual else ''}; for full attention set "
            "task.layers_online=null"
        )
