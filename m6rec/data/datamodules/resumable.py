"""Deterministic, disjoint, resumable training shards for DDP: a sampler with epoch + position state, and a DataLoader
whose state counts the batches it delivered (Lightning saves/restores any train loader with state_dict/load_state_dict
in the checkpoint's fit-loop state, so a resumed run neither repeats nor skips blocks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)


class ResumableShardSampler(DistributedSampler):
    """Epoch e: a permutation of range(n) seeded with (seed, e) (identity when shuffle=False) cut to
    (n // world) * world indices; rank r takes r::world. Ranks get equal counts and disjoint indices.

    `state_dict()` = {"epoch", "position"} (indices of this epoch already yielded; a finished epoch reads as the next
    epoch at position 0); after `load_state_dict` the next iteration resumes there, later ones start at 0.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)  # type: ignore[arg-type]
        self.num_samples = len(dataset) // num_replicas
        self.total_size = self.num_samples * num_replicas
        self.start = 0  # where the next iteration begins (a resume point)
        self.position = 0  # indices yielded in the current epoch

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's shard of epoch `epoch`, in order (a subclass may order it otherwise: `num_samples` long)."""
        n = len(self.dataset)  # type: ignore[arg-type]
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return order[: self.total_size][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        self.position = start
        for index in self.indices(self.epoch)[start:].tolist():
            self.position += 1
            yield index

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch` from its start; the current epoch (e.g. just restored) keeps its resume point."""
        if epoch != self.epoch:
            self.epoch, self.start, self.position = epoch, 0, 0

    def state_at(self, epoch: int, position: int) -> dict[str, int]:
        if position >= self.num_samples:
            epoch, position = epoch + 1, 0
        return {"epoch": epoch, "position": position, "num_replicas": self.num_replicas}

    def state_dict(self) -> dict[str, int]:
        return self.state_at(self.epoch, self.position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        position, replicas = int(state["position"]), int(state.get("num_replicas", self.num_replicas))
        if replicas != self.num_replicas:  # same number of steps done, but the shards differ: not exact
            log.warning(
                "Resuming with %d ranks instead of %d: the rest of epoch %d is approximate",
                self.num_replicas,
                replicas,
                state["epoch"],
            )
            position = position * replicas // self.num_replicas
        self.epoch, self.start, self.position = int(state["epoch"]), min(position, self.num_samples), position


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ResumableShardSampler whose state is the position of the last batch it *delivered* (worker
    prefetching runs the sampler ahead, so the sampler's own position would skip blocks on resume)."""

    sampler: ResumableShardSampler

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Lightning may rebuild the loader with a sampler of its own (e.g. overfit_batches): then a plain DataLoader
        self.resumable = isinstance(self.sampler, ResumableShardSampler)
        self._delivered: tuple[int, int] | None = None  # (epoch, position) after the last delivered batch

    def __iter__(self) -> Iterator[Any]:
        return self._batches() if self.resumable else super().__iter__()

    def _batches(self) -> Iterator[Any]:
        # runs at the first next(): after Lightning's set_epoch, which follows iter() on resume
        epoch, position = self.sampler.epoch, self.sampler.start
        self._delivered = (epoch, position)
        for batch in super().__iter__():  # full batches but the epoch's last (drop_last=False)
            position = min(position + self.batch_size, self.sampler.num_samples)  # type: ignore[operator]
            self._delivered = (epoch, position)
            yield batch

    def state_dict(self) -> dict[str, int]:
        if not self.resumable:
            return {}
        return self.sampler.state_dict() if self._delivered is None else self.sampler.state_at(*self._delivered)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.resumable and state:
            self.sampler.load_state_dict(state)
            self._delivered = None


def resumable_train_loader(
    dataset: Sized,
    batch_size: int,
    world: int,
    rank: int,
    num_workers: int,
    collate_fn: Any,
    sampler: ResumableShardSampler | None = None,
) -> ResumableDataLoader:
    """A shuffled training loader whose order depends only on the run's seed (`torch.initial_seed()`, set by
    `seed_everything(seed)`) and the epoch, and whose position is saved in checkpoints (exact mid-epoch resume).
    `sampler`: another such order (`bucketing.LengthGroupedSampler` for `data.length_bucketing`).

    Its own generator seeds the workers, so iterating it leaves the global RNG untouched."""
    seed = torch.initial_seed() % 2**32
    if sampler is None:
        sampler = ResumableShardSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def trainer_world(trainer: Any) -> tuple[int, int]:
    """(world size, global rank) of the attached Trainer; (1, 0) before one is attached."""
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def split_loader(
    dataset: Sized,
    train: bool,
    trainer: Any,
    batch_size: int,
    eval_batch_size: int,
    num_workers: int,
    collate_fn: Any,
    sampler: ResumableShardSampler | None = None,
    shard_eval: bool = True,
) -> DataLoader:
    """Every DataModule's loader: training = `resumable_train_loader` (seeded, resumable, DDP-sharded; `sampler`
    another such order); evaluation in order, sharded across ranks without padding so each row is scored once
    (exact DDP metrics), or whole on every rank with `shard_eval=False` (e.g. a catalogue each rank embeds)."""
    from m6rec.data.datamodules.ctr_dataset import UnpaddedDistributedSampler

    world, rank = trainer_world(trainer)
    if train:
        return resumable_train_loader(dataset, batch_size, world, rank, num_workers, collate_fn, sampler)
    shard = UnpaddedDistributedSampler(dataset, world, rank) if shard_eval and world > 1 else None
    return DataLoader(
        dataset,
        batch_size=eval_batch_size,
        shuffle=False,
        sampler=shard,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
    )
