"""What the behaviour-log DataModules load: `CTRDataset`, its `pad_collate`, and the sampler that shards an
evaluation set across DDP ranks without repeats."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class CTRDataset(Dataset):
    """Tokenized (user, candidate) events with a binary label and the raw rating (0 for sampled negatives); `extra`
    holds further per-sample columns a subclass's encoding adds (e.g. late-interaction segment lengths). `input_ids`
    is any sequence of int arrays: a `Ragged` view of one flat token array, or a list."""

    def __init__(
        self,
        input_ids: Sequence[np.ndarray],
        labels: np.ndarray,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        ratings: np.ndarray | None = None,
        extra: dict[str, Sequence[Any]] | None = None,
    ):
        self.input_ids, self.labels, self.user_ids, self.item_ids = input_ids, labels, user_ids, item_ids
        self.ratings = np.full(len(labels), np.nan, np.float32) if ratings is None else ratings
        self.extra = extra or {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids[i],
            "label": self.labels[i],
            "user_id": self.user_ids[i],
            "item_id": self.item_ids[i],
            "rating": self.ratings[i],
            **{name: values[i] for name, values in self.extra.items()},
        }


def pad_collate(pad_id: int):
    """Right-pad `input_ids` to the longest sequence in the batch and build the attention mask."""

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, b in enumerate(batch):
            ids[row, : len(b["input_ids"])] = torch.from_numpy(b["input_ids"].astype(np.int64))
            mask[row, : len(b["input_ids"])] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([b["label"] for b in batch], dtype=torch.float32),
            "user_ids": torch.tensor([b["user_id"] for b in batch], dtype=torch.long),
            "item_ids": torch.tensor([b["item_id"] for b in batch], dtype=torch.long),
            "ratings": torch.tensor([b.get("rating", np.nan) for b in batch], dtype=torch.float32),
        }

    return collate


class UnpaddedDistributedSampler(DistributedSampler):
    """Shard an evaluation set across ranks without repeating samples, so DDP metrics are exact."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.num_samples
