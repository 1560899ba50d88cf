"""Lightning DataModules over a behaviour log: CTR samples, next-item retrieval, late-interaction segments,
explanations, several tasks at once, and the ID baselines' item-id sequences, cold-item ranking and feature ids;
the on-disk sample cache and the length-bucketing sampler."""

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.cold_items import ColdItemDataModule
from m6rec.data.datamodules.explanations import ExplanationDataModule
from m6rec.data.datamodules.features import FeatureDataModule
from m6rec.data.datamodules.id_sequences import SequenceDataModule
from m6rec.data.datamodules.late_segments import LateSegmentDataModule
from m6rec.data.datamodules.multi_task import MultiTaskDataModule
from m6rec.data.datamodules.next_item import NextItemDataModule

__all__ = [
    "BehaviourLogDataModule",
    "ColdItemDataModule",
    "ExplanationDataModule",
    "FeatureDataModule",
    "LateSegmentDataModule",
    "MultiTaskDataModule",
    "NextItemDataModule",
    "SequenceDataModule",
]
