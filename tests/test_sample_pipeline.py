"""The memory-lean sample pipeline: one flat token array from the encoder through the cache to the Dataset, equal,
bit for bit, to the one-prompt oracle and to what an uncached setup serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m6rec.data import BehaviourLogDataModule
from m6rec.data.datamodules.sample_cache import read_samples, write_samples
from m6rec.data.protocol.history import recent_training_rows
from m6rec.data.protocol.splits import TRAIN
from m6rec.data.ragged import Ragged
from m6rec.data.text import batch_prompts
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.sample_prompts import prompt_parts
from tests.helpers import ROOT
from tests.oracle import encode_one


def test_ragged_rows_views_and_compaction():
    r = Ragged.from_rows([np.array([5, 6]), np.array([], np.int64), np.array([7, 8, 9])], np.uint16)
    assert r.flat.dtype == np.uint16 and r.lengths.tolist() == [2, 0, 3] and len(r) == 3
    assert [x.tolist() for x in r] == [[5, 6], [], [7, 8, 9]] and r[2].dtype == np.int32
    picked = r.take(np.array([2, 0]))
    assert picked.flat is r.flat and [x.tolist() for x in picked] == [[7, 8, 9], [5, 6]]
    flat, offsets = picked.compact()
    assert flat.tolist() == [7, 8, 9, 5, 6] and offsets.tolist() == [0, 3, 5]
    assert r.compact()[0] is r.flat  # already back to back: no copy
    both = Ragged.concat([picked, r])
    assert [x.tolist() for x in both] == [[7, 8, 9], [5, 6], [5, 6], [], [7, 8, 9]]


def _prompts_and_oracle(dm: BehaviourLogDataModule) -> tuple[Ragged, list[np.ndarray]]:
    samples = dm.samples()
    split = samples["split"].to_numpy()
    history = recent_training_rows(samples, split == TRAIN, dm.hparams.history_len)
    got = dm.encode_columns(samples, history)["input_ids"]
    lists = history.as_lists(samples["item_id"].to_numpy(), samples["rating"].to_numpy())
    encoder = SegmentEncoder(dm.tokenizer, dm.templates, dm.hparams.max_length)
    return got, [encode_one(encoder, *part) for part in prompt_parts(dm.tables, dm.templates, samples, lists)]


@pytest.mark.parametrize("max_length", [32, 64])
def test_prompt_ids_equal_the_oracle_and_chunking_changes_nothing(
    ml100k_dir: Path, tmp_path: Path, monkeypatch, max_length: int
):
    dm = BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), max_length=max_length)
    got, expected = _prompts_and_oracle(dm)
    assert got.flat.dtype == np.uint16  # a 4096-token vocabulary
    assert len(got) == len(expected) == 320 and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert sum(len(x) == max_length for x in expected) > 0  # the budget dropped history somewhere
    monkeypatch.setattr(batch_prompts, "CHUNK_SAMPLES", 7)  # 46 chunks: the same flat array
    samples = dm.samples()
    history = recent_training_rows(samples, samples["split"].to_numpy() == TRAIN, dm.hparams.history_len)
    chunked = dm.encode_columns(samples, history)["input_ids"]
    assert np.array_equal(chunked.compact()[0], got.compact()[0])


def test_cache_serves_what_an_uncached_setup_serves(ml100k_dir: Path, tmp_path: Path):
    plain = BehaviourLogDataModule(data_dir=str(tmp_path / "a"), root=str(ml100k_dir), cache=False)
    plain.setup()
    cold = BehaviourLogDataModule(data_dir=str(tmp_path / "b"), root=str(ml100k_dir))
    cold.setup()
    warm = BehaviourLogDataModule(data_dir=str(tmp_path / "b"), root=str(ml100k_dir))
    warm.setup()
    (entry,) = [p for p in (tmp_path / "b" / "cache").iterdir() if p.is_dir()]
    assert sorted(p.name for p in entry.iterdir() if "input_ids" in p.name) == [
        "input_ids.flat.npy",
        "input_ids.offsets.npy",
    ]
    assert isinstance(warm.datasets["train"].input_ids.flat, np.memmap)  # read lazily
    collate = plain.collate_fn()
    for name, a in plain.datasets.items():
        for other in (cold.datasets[name], warm.datasets[name]):
            assert len(a) == len(other) > 0
            for j in range(len(a)):
                x, y = a[j], other[j]
                assert x["input_ids"].dtype == y["input_ids"].dtype == np.int32
                assert np.array_equal(x["input_ids"], y["input_ids"]) and x["label"] == y["label"]
            batch, again = collate([a[j] for j in range(len(a))]), collate([other[j] for j in range(len(a))])
            assert all(np.array_equal(batch[k].numpy(), again[k].numpy(), equal_nan=True) for k in batch)


def test_written_columns_read_back_bit_exactly(tmp_path: Path):
    columns = {
        "input_ids": Ragged.from_rows([np.array([3, 65535]), np.array([1])], np.uint16),
        "segment_lengths": [np.array([2, 1], np.int32), np.array([], np.int32)],
        "label": np.array([1.0, 0.0], np.float32),
        "split": np.array([0, 2], np.int8),
    }
    write_samples(tmp_path / "entry", columns, {"stats": {"n": 2}})
    back, meta = read_samples(tmp_path / "entry")
    assert meta["stats"] == {"n": 2} and list(back) == list(columns)
    assert back["input_ids"].flat.dtype == np.uint16 and [x.tolist() for x in back["input_ids"]] == [[3, 65535], [1]]
    assert [x.tolist() for x in back["segment_lengths"]] == [[2, 1], []]
    assert back["label"].dtype == np.float32 and back["split"].tolist() == [0, 2]


@pytest.mark.slow
def test_real_ml100k_prompt_ids_equal_the_oracle(tmp_path: Path):
    dm = BehaviourLogDataModule(data_dir=str(ROOT / "data"))
    got, expected = _prompts_and_oracle(dm)
    assert len(got) == 100_000 and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
