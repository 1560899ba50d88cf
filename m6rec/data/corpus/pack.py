"""Packing a document stream into fixed-size token blocks stored as flat memory-mapped arrays ({train,valid}.bin)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "valid")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits comfortably (vocab < 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size < 65536 else np.uint32)


def split_mask(n_documents: int, valid_fraction: float, seed: int) -> np.ndarray:
    """True for the validation documents: round(valid_fraction * n) of them (at least one when the fraction is > 0 and
    n >= 2, never all), drawn by a permutation seeded with `seed`."""
    n_valid = int(round(valid_fraction * n_documents))
    if valid_fraction > 0 and n_documents >= 2:
        n_valid = min(max(n_valid, 1), n_documents - 1)
    mask = np.zeros(n_documents, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n_documents)[:n_valid]] = True
    return mask


def pack_documents(
    documents: Iterable[str],
    is_valid: np.ndarray,
    tokenizer,
    separator_id: int,
    block_size: int,
    out_dir: Path,
    chunk_documents: int = 1024,
) -> dict[str, Any]:
    """Tokenize `documents` chunk by chunk (no special tokens, `separator_id` after each), append each document's ids
    to train.bin or valid.bin (by `is_valid`, aligned with the stream), then cut both to whole blocks.

    Only one chunk of ids is in memory at a time. Returns per-split counts (documents, tokens before the cut, blocks).
    """
    dtype = token_dtype(len(tokenizer))
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    counts = {s: {"documents": 0, "tokens": 0} for s in SPLITS}
    files = {s: open(out_dir / f"{s}.bin", "wb") for s in SPLITS}  # noqa: SIM115  (closed below)
    try:
        position, stream = 0, iter(documents)
        while chunk := list(islice(stream, chunk_documents)):
            if position + len(chunk) > len(is_valid):
                raise RuntimeError("the corpus changed while it was being packed: more documents than counted")
            encodings = encode(chunk, add_special_tokens=False)
            valid = is_valid[position : position + len(chunk)]
            for split, flag in (("train", False), ("valid", True)):
                ids = [enc.ids + [separator_id] for enc, v in zip(encodings, valid, strict=True) if v == flag]
                if ids:
                    flat = np.fromiter((t for doc in ids for t in doc), dtype=dtype)
                    files[split].write(flat.tobytes())
                    counts[split]["documents"] += len(ids)
                    counts[split]["tokens"] += len(flat)
            position += len(chunk)
        if position != len(is_valid):
            raise RuntimeError(f"the corpus changed while it was being packed: {position} documents, {len(is_valid)}")
    finally:
        for f in files.values():
            f.close()
    for split in SPLITS:
        blocks = counts[split]["tokens"] // block_size
        os.truncate(out_dir / f"{split}.bin", blocks * block_size * dtype.itemsize)
        counts[split]["blocks"] = blocks
    return {
        "block_size": block_size,
        "dtype": dtype.name,
        "vocab_size": len(tokenizer),
        "separator_id": separator_id,
        **counts,
    }


class BlockDataset(Dataset):
    """Block i of a packed split, read lazily from the memory-mapped file (opened once per process)."""

    def __init__(self, path: Path, dtype: str, blocks: int, block_size: int):
        self.path, self.dtype, self.blocks, self.block_size = Path(path), np.dtype(dtype), blocks, block_size
        self._memmap: np.memmap | None = None

    def __len__(self) -> int:
        return self.blocks

    @property
    def memmap(self) -> np.memmap:
        if self._memmap is None:
            self._memmap = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.blocks, self.block_size))
        return self._memmap

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.blocks:
            raise IndexError(f"block {i} out of range [0, {self.blocks})")
        return np.asarray(self.memmap[i])

    def __getitems__(self, indices: list[int]) -> np.ndarray:
        """A batch of blocks in one fancy-indexed read (used by DataLoader's batched fetch)."""
        return self.memmap[np.asarray(indices, dtype=np.int64)]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_memmap": None}  # worker processes map the file themselves

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.blocks))


class BlockCollate:
    """Blocks → {"input_ids": LongTensor[B, block_size], "attention_mask": ones, "special_tokens_mask": 1 at special
    tokens (the document separators)}; no masking (an MLM system masks itself)."""

    def __init__(self, special_ids: list[int]):
        self.special_ids = torch.tensor(sorted(set(special_ids)), dtype=torch.long)

    def __call__(self, blocks: np.ndarray | list[np.ndarray]) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(np.stack(blocks) if isinstance(blocks, list) else blocks, dtype=np.int64))
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "special_tokens_mask": torch.isin(ids, self.special_ids).long(),
        }
