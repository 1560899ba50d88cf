"""Lightning DataModules over a behaviour log: CTR samples, next-item retrieval, late-interaction segments,
explanations and several tasks at once, with the on-disk sample cache and the length-bucketing sampler."""

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.explanations import ExplanationDataModule
from m6rec.data.datamodules.late_segments import LateSegmentDataModule
from m6rec.data.datamodules.multi_task import MultiTaskDataModule
from m6rec.data.datamodules.next_item import NextItemDataModule

__all__ = [
    "BehaviourLogDataModule",
    "ExplanationDataModule",
    "LateSegmentDataModule",
    "MultiTaskDataModule",
    "NextItemDataModule",
]
