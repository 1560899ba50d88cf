"""The evaluation protocol: train/valid/test splits, k-core filtering and negative sampling, training histories."""

from m6rec.data.protocol.history import RaggedHistory, recent_training_history, recent_training_rows
from m6rec.data.protocol.sampling import NEGATIVE_STRATEGIES, k_core, sample_negatives
from m6rec.data.protocol.splits import SPLIT_NAMES, TEST, TRAIN, VALID, split_interactions

__all__ = [
    "NEGATIVE_STRATEGIES",
    "RaggedHistory",
    "SPLIT_NAMES",
    "TEST",
    "TRAIN",
    "VALID",
    "k_core",
    "recent_training_history",
    "recent_training_rows",
    "sample_negatives",
    "split_interactions",
]
