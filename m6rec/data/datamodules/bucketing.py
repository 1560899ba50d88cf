"""Length-grouped training order (`data.length_bucketing`): batches of similar-length samples, so padding shrinks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """Each epoch: shuffle, take buckets of `bucket_batches` batches' worth, sort each by length, cut batches, shuffle
    the batch order (seeded by `seed` and the epoch); rank r takes every world-th batch.

    Iterating yields the indices of this rank's batches back to back, so a DataLoader with the same `batch_size`
    cuts exactly these batches (the one short batch comes last). A DistributedSampler, so Lightning sets the epoch
    and injects no sampler of its own. With one rank every sample comes exactly once per epoch; with several, ranks
    short of batches repeat full ones, so all take the same number of steps.
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
        super().__init__(self.lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.bucket_batches = int(batch_size), int(bucket_batches)
        self._cached: tuple[int, list[np.ndarray]] | None = None

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

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch."""
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self.all_batches()[self.rank])
        return self._cached[1]

    def __iter__(self) -> Iterator[int]:
        own = self.batches()
        return iter(np.concatenate(own).tolist() if own else [])

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches())
