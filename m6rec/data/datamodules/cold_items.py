"""ColdItemDataModule: protocol P3, ranking items that no training interaction mentions (`data.split=cold_items`).

The cold_items split holds out `split_ratios[1]` / `split_ratios[2]` of the items (all their interactions) as the
VALID / TEST items. A query is a *user* (one per user with a held-out interaction of that split), every one of the
user's held-out items of that split is relevant, and the ranked list is the split's held-out items only; items the
user saw in earlier splits are masked (none of them is held out of this split, so the mask is empty in practice).
The history is the user's TRAIN items at validation and at test: the VALID items are cold items too, not the past.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from m6rec.data.datamodules.id_sequences import SequenceDataModule
from m6rec.data.protocol.splits import TEST, TRAIN, VALID


class ColdItemDataModule(SequenceDataModule):
    """SequenceDataModule over the cold_items split whose validation / test catalogue is that split's items."""

    def __init__(self, **kwargs: Any):
        settings = {"split": "cold_items", **kwargs}
        kwargs = {}  # Lightning's hparams merge every __init__ frame: let the parent's normalised values stand
        super().__init__(**settings)
        if self.hparams.split != "cold_items":
            raise ValueError(
                f"data.split: ColdItemDataModule ranks held-out items (cold_items), got {self.hparams.split!r}"
            )
        self.history_splits = {VALID: (TRAIN,), TEST: (TRAIN,)}

    def ranking_items(self, stage: str) -> np.ndarray:
        """Item indices held out as the `stage` ("val" | "test") split's items, sorted."""
        code = {"val": VALID, "test": TEST}[stage]
        frame = self.indexed
        return np.unique(frame.loc[frame["split"] == code, "item"].to_numpy()).astype(np.int64)
