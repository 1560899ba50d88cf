"""Length-grouped training order (`data.length_bucketing`): batches of similar-length samples, so padding shrinks;
seeded by (seed, epoch) and resumable mid-epoch like every training order (m6rec.data.datamodules.resumable)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m6rec.data.datamodules.resumable import ResumableShardSampler


class LengthGroupedSampler(ResumableShardSampler):
    """Each epoch: shuffle, take buckets of `bucket_batches` batches' worth, sort each by length, cut batches, shuffle
    the batch order (seeded by `seed` and the epoch); rank r takes every world-th batch.

    Iterating yields the indices of this rank's batches back to back, so a DataLoader with the same `batch_size`
    cuts exactly these batches (the one short batch comes last). With one rank every sample comes exactly once per
    epoch; with several, ranks short of batches repeat full ones, so all take the same number of steps. Its state is
    the (epoch, position) of ResumableShardSampler: a `ResumableDataLoader` over it resumes mid-epoch exactly.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        bucket_batches: int = 50,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.bucket_batches = int(batch_size), int(bucket_batches)
        self._cached: tuple[int, list[np.ndarray]] | None = None
        super().__init__(self.lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.num_samples = self.total_size = sum(len(b) for b in self.batches())  # the same count every epoch

    def all_batches(self, epoch: int | None = None) -> list[list[np.ndarray]]:
        """Every rank's batches for `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        bucket = self.batch_size * self.bucket_batches
        batches: list[np.ndarray] = []
        for lo in range(0, len(order), bucket):
            chunk = order[lo : lo + bucket]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]  # at most one: the end of the last bucket
        full = [full[i] for i in rng.permutation(len(full))]
        ranks = [full[r :: self.num_replicas] for r in range(self.num_replicas)]
        if short:
            min(ranks, key=len).append(short[0])
        steps, pool = max(len(r) for r in ranks), full or short
        for k, own in enumerate(r for r in ranks for _ in range(steps - len(r))):
            own.insert(0, pool[k % len(pool)])  # repeats go first: the short batch stays last
        return ranks

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches for `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.all_batches(epoch)[self.rank])
        return self._cached[1]

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's batches of epoch `epoch`, back to back."""
        own = self.batches(epoch)
        return np.concatenate(own) if own else np.zeros(0, np.int64)
