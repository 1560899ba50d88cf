"""MultiTaskDataModule: one DataModule per task, combined: training batches are `{task: batch}` (Lightning's
CombinedLoader), validation/test loaders run one after another (dataloader_idx = task order)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader

MODES = ("max_size_cycle", "max_size", "min_size")


class MultiTaskDataModule(L.LightningDataModule):
    """`datamodules` maps a task name to its DataModule; all must share one tokenizer (one backbone reads them).

    `mode` (CombinedLoader): max_size_cycle — an epoch is the longest task's loader, shorter ones restart; min_size —
    the shortest; max_size — the longest, exhausted tasks give no batch (their heads sit out those steps).
    """

    def __init__(self, datamodules: Mapping[str, L.LightningDataModule], mode: str = "max_size_cycle"):
        super().__init__()
        if not datamodules:
            raise ValueError("data.datamodules: needs at least one task")
        if mode not in MODES:
            raise ValueError(f"data.mode: expected one of {MODES}, got {mode!r}")
        self.datamodules = dict(datamodules)
        self.names = list(self.datamodules)
        self.mode = mode

    @cached_property
    def tokenizer(self):
        """The tokenizer every task's DataModule uses (checked to be the same vocabulary)."""
        first, *rest = self.names
        vocab = self.datamodules[first].tokenizer.get_vocab()
        for name in rest:
            if self.datamodules[name].tokenizer.get_vocab() != vocab:
                raise ValueError(
                    f"data.datamodules.{name}: tokenizer differs from data.datamodules.{first}'s; tasks sharing "
                    "a backbone need one tokenizer (same tokenizer/vocab_size/metadata)"
                )
        return self.datamodules[first].tokenizer

    @property
    def stats(self) -> dict[str, Any]:
        return {name: getattr(dm, "stats", {}) for name, dm in self.datamodules.items()}

    def prepare_data(self) -> None:
        for dm in self.datamodules.values():
            dm.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for dm in self.datamodules.values():
            dm.trainer = self.trainer  # their loaders shard evaluation across DDP ranks through the trainer
            dm.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader({name: dm.train_dataloader() for name, dm in self.datamodules.items()}, self.mode)

    def val_dataloader(self) -> list:
        return [self.datamodules[name].val_dataloader() for name in self.names]

    def test_dataloader(self) -> list:
        return [self.datamodules[name].test_dataloader() for name in self.names]
