"""Ragged integer rows (token ids, segment lengths) in one flat array: no per-row Python objects; subsets are views."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of range(starts[j], starts[j] + lengths[j]) over j (int32 while the values fit), built in one
    array: ones, with each range's jump from the previous one's end at its first position, cumulated in place."""
    starts, lengths = np.asarray(starts), np.asarray(lengths)
    total = int(lengths.sum())
    dtype = np.int32 if max(total, int(starts.max(initial=0)) + int(lengths.max(initial=0))) < 2**31 else np.int64
    out = np.ones(total, dtype)
    nonempty = lengths > 0
    starts, lengths = starts[nonempty].astype(np.int64), lengths[nonempty].astype(np.int64)
    if total:
        first = np.cumsum(lengths) - lengths
        out[first[1:]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
        out[0] = starts[0]
        np.cumsum(out, out=out)
    return out


class Ragged(Sequence):
    """Row j is `flat[starts[j] : starts[j] + lengths[j]]`, served as an int32 array (whatever `flat` stores, e.g.
    uint16 token ids or a read-only memmap); rows may share `flat`, so `take` copies no values."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
        self.flat, self.starts, self.lengths = flat, np.asarray(starts, np.int64), np.asarray(lengths, np.int64)

    @classmethod
    def from_offsets(cls, flat: np.ndarray, offsets: np.ndarray) -> Ragged:
        """Rows back to back: row j is flat[offsets[j]:offsets[j + 1]]."""
        offsets = np.asarray(offsets, np.int64)
        return cls(flat, offsets[:-1], np.diff(offsets))

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray] | Ragged, dtype: type = np.int32) -> Ragged:
        """A Ragged holding `rows` (a list of 1-D arrays is copied into one flat array)."""
        if isinstance(rows, Ragged):
            return rows
        lengths = np.fromiter(map(len, rows), np.int64, count=len(rows))
        flat = np.concatenate([np.asarray(r) for r in rows]).astype(dtype) if len(rows) else np.zeros(0, dtype)
        return cls.from_offsets(flat, np.concatenate([[0], np.cumsum(lengths)]))

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        """The rows of `parts`, in order, over one flat array."""
        flats = [p.flat for p in parts]
        shifts = np.cumsum([0] + [len(f) for f in flats[:-1]])
        starts = [p.starts + s for p, s in zip(parts, shifts, strict=True)]
        return cls(np.concatenate(flats), np.concatenate(starts), np.concatenate([p.lengths for p in parts]))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            return self.take(np.arange(len(self))[j])
        start = int(self.starts[j])
        return np.asarray(self.flat[start : start + int(self.lengths[j])]).astype(np.int32, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[j] for j in range(len(self)))

    def take(self, rows: np.ndarray) -> Ragged:
        """The rows `rows` (a view over the same flat array)."""
        return Ragged(self.flat, self.starts[rows], self.lengths[rows])

    def compact(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat, offsets) with the rows back to back in order: `flat` itself when it already is that."""
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        if len(self.flat) == offsets[-1] and np.array_equal(self.starts, offsets[:-1]):
            return self.flat, offsets
        return np.asarray(self.flat)[ragged_ranges(self.starts, self.lengths)], offsets
