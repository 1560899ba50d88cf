"""GAUC: the AUC of each user's own scored events, averaged over the users that have both classes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.retrieval import RetrievalAUROC


def _nanmean(values: Tensor, dim: int | None = None) -> Tensor:
    return values.nanmean() if dim is None else values.nanmean(dim=dim)


class GroupAUROC(RetrievalAUROC):
    """RetrievalAUROC grouped by `indexes` (user ids), skipping users with only positives or only negatives.

    torchmetrics scores an all-positive query as 0.0; here it is left out like an all-negative one, so the result is
    the mean per-user AUC over users with both classes (0.0 when there are none). Ties count one half.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(empty_target_action="skip", aggregation=_nanmean, **kwargs)

    def _metric(self, preds: Tensor, target: Tensor) -> Tensor:
        if bool(target.all()):  # only positives: no pair to rank
            return torch.tensor(float("nan"), device=preds.device, dtype=preds.dtype)
        return super()._metric(preds, target)

    def compute(self) -> Tensor:
        value = super().compute()
        return torch.nan_to_num(value, nan=0.0)  # every user single-class
