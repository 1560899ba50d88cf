"""The data layer: `sources` (raw formats → tables), `protocol` (splits, negatives, histories), `text` (templates,
prompt encoding, tokenizers), `corpus` (text corpora for pretraining) and `datamodules` (what `data._target_` names).

The DataModules are exported lazily (PEP 562): importing a light sub-package such as `m6rec.data.text` does not import
Lightning, and `m6rec.models.late_interaction` can use `m6rec.data.text` without an import cycle."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BehaviourLogDataModule": "m6rec.data.datamodules",
    "ColdItemDataModule": "m6rec.data.datamodules",
    "ExplanationDataModule": "m6rec.data.datamodules",
    "FeatureDataModule": "m6rec.data.datamodules",
    "LateSegmentDataModule": "m6rec.data.datamodules",
    "MultiTaskDataModule": "m6rec.data.datamodules",
    "NextItemDataModule": "m6rec.data.datamodules",
    "SequenceDataModule": "m6rec.data.datamodules",
    "TextCorpusDataModule": "m6rec.data.corpus",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`m6rec.data.<DataModule>` imported on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'm6rec.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
