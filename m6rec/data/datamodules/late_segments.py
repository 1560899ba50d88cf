"""LateSegmentDataModule: CTR samples as late-interaction segments (user context, each history item, candidate).

Each sample's `input_ids` is the concatenation of its segments' token ids (a full model reads exactly these tokens),
with `segment_lengths` and `segment_roles` beside it; batches carry `segments` for `LateInteractionScorer`.
Set `task.layers_online` and this DataModule (data=ml100k_late) together (experiments/ctr_late.yaml).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.ctr_dataset import pad_collate
from m6rec.data.protocol.history import RaggedHistory
from m6rec.data.text.encode import SegmentEncoder
from m6rec.models.late_interaction import Segment, tokenize_late


def split_segments(input_ids: np.ndarray, lengths: np.ndarray, roles: np.ndarray) -> list[Segment]:
    """A sample's flat token ids cut back into (role, ids) segments."""
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    ids = input_ids.tolist()
    return [(int(r), tuple(ids[a:b])) for r, a, b in zip(roles.tolist(), bounds[:-1], bounds[1:], strict=True)]


def late_collate(pad_id: int) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """`pad_collate`'s batch plus `segments`: per sample, its list of (role, token ids)."""
    pad = pad_collate(pad_id)

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        out = pad(batch)
        out["segments"] = [split_segments(b["input_ids"], b["segment_lengths"], b["segment_roles"]) for b in batch]
        return out

    return collate


class LateSegmentDataModule(BehaviourLogDataModule):
    """BehaviourLogDataModule whose prompts are tokenized segment by segment (`tokenize_late`): the same text, each
    history item and the candidate alone, the oldest history items dropped to fit `max_length`."""

    def encode_columns(
        self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]] | RaggedHistory
    ) -> dict[str, list[np.ndarray]]:
        if isinstance(histories, RaggedHistory):
            histories = histories.as_lists(samples["item_id"].to_numpy(), samples["rating"].to_numpy())
        encoder = SegmentEncoder(self.tokenizer, self.templates, self.hparams.max_length)
        if encoder.prefix or encoder.suffix:
            raise ValueError(
                "model.tokenizer: adds special tokens around a sequence; LateSegmentDataModule (late "
                "interaction) expects a decoder's tokenizer (GPT-2 style)"
            )
        samples_segments = tokenize_late(self.sample_parts(samples, histories), encoder, self.hparams.max_length)
        columns: dict[str, list[np.ndarray]] = {"input_ids": [], "segment_lengths": [], "segment_roles": []}
        for segments in samples_segments:
            columns["input_ids"].append(np.fromiter((i for _, ids in segments for i in ids), np.int32))
            columns["segment_lengths"].append(np.array([len(ids) for _, ids in segments], np.int32))
            columns["segment_roles"].append(np.array([role for role, _ in segments], np.int32))
        return columns

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return late_collate(self.tokenizer.pad_token_id)
