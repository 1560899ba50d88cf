"""LoRA (and other weight-merging PEFT) folded into the base weights for evaluation and serving: same outputs, no
adapter matmuls. The trained module itself is never merged (merge then unmerge would drift its frozen weights)."""

from __future__ import annotations

import copy

import lightning as L
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


def merged_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with every PEFT tuner layer merged into its base layer (a plain copy if it has none)."""
    merged = copy.deepcopy(module)
    for layer in merged.modules():
        if isinstance(layer, BaseTunerLayer) and not layer.merged:
            layer.merge()
    return merged


class MergeLoraForTest(L.Callback):
    """Tests on a merged copy of `pl_module.model` (`merged_copy`) and puts the trained module back afterwards.

    python run.py experiment=ctr_lora +callbacks.merge_lora._target_=m6rec.peft.merge.MergeLoraForTest
    """

    def __init__(self) -> None:
        self.trained: nn.Module | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trained = pl_module.model
        pl_module.model = merged_copy(self.trained)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trained is not None:
            pl_module.model, self.trained = self.trained, None
