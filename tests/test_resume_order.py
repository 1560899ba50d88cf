"""Exact mid-epoch resume of every training order, in-process and fast: a loader stopped after k batches, its state
loaded into a fresh loader, yields exactly the batches the uninterrupted loader yields next — for the length-bucketing
sampler (one rank and DDP ranks) and the ID-sequence and feature DataModules of the baselines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.bucketing import LengthGroupedSampler
from m6rec.data.datamodules.features import FeatureDataModule
from m6rec.data.datamodules.id_sequences import SequenceDataModule
from m6rec.data.datamodules.resumable import ResumableDataLoader, resumable_train_loader

pytestmark = pytest.mark.usefixtures("one_thread")
EPOCHS = 2


def _plain(batch: Any) -> Any:
    """A batch as nested lists (tensors of a dict batch by key), comparable with ==."""
    if isinstance(batch, dict):
        return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.tolist()


def _whole(loader: ResumableDataLoader) -> list[Any]:
    """Every batch of EPOCHS epochs, as Lightning asks for them (set_epoch, then iterate)."""
    out = []
    for epoch in range(EPOCHS):
        loader.sampler.set_epoch(epoch)
        out += [_plain(b) for b in loader]
    return out


def _interrupted(make: Callable[[], ResumableDataLoader], stop_epoch: int, stop_batch: int) -> list[Any]:
    """The batches of a run stopped after `stop_batch` batches of epoch `stop_epoch`, then resumed in a fresh loader
    from the first loader's state (what a checkpoint keeps) — Lightning's order: load_state_dict, set_epoch, iter."""
    loader, done = make(), []
    for epoch in range(stop_epoch + 1):
        loader.sampler.set_epoch(epoch)
        batches = iter(loader)
        for _ in range(stop_batch if epoch == stop_epoch else len(loader)):
            done.append(_plain(next(batches)))
        del batches  # the kill: prefetched but undelivered batches are lost
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    for epoch in range(state["epoch"], EPOCHS):
        resumed.sampler.set_epoch(epoch)
        done += [_plain(b) for b in resumed]
    return done


def _bucketed(n: int, batch_size: int, world: int = 1, rank: int = 0, workers: int = 0) -> ResumableDataLoader:
    lengths = np.random.default_rng(0).integers(1, 100, n)
    torch.manual_seed(11)  # the run's seed: the sampler and the worker generator come from torch.initial_seed()
    sampler = LengthGroupedSampler(lengths, batch_size, world, rank, torch.initial_seed(), bucket_batches=3)
    return resumable_train_loader(np.arange(n), batch_size, world, rank, workers, None, sampler)


@pytest.mark.parametrize(
    ("stop_epoch", "stop_batch", "workers"), [(0, 5, 0), (0, 5, 1), (1, 0, 0), (1, 12, 0), (0, 13, 0)]
)
def test_length_bucketing_resumed_mid_epoch_yields_the_uninterrupted_batches(
    stop_epoch: int, stop_batch: int, workers: int
):
    whole = _whole(_bucketed(203, 16, workers=workers))
    assert len(whole) == 2 * 13 and [len(b) for b in whole[:13]] == [16] * 12 + [11]  # short batch last
    assert sorted(x for b in whole[:13] for x in b) == list(range(203)) and whole[:13] != whole[13:]
    assert _interrupted(lambda: _bucketed(203, 16, workers=workers), stop_epoch, stop_batch) == whole


def test_length_bucketing_checkpoint_state_is_the_delivered_position():
    loader = _bucketed(203, 16, workers=1)  # the worker runs ahead of what the loop was given
    loader.sampler.set_epoch(0)
    batches = iter(loader)
    for _ in range(3):
        next(batches)
    assert loader.state_dict() == {"epoch": 0, "position": 48, "num_replicas": 1}
    for _ in range(10):
        next(batches)
    assert loader.state_dict() == {"epoch": 1, "position": 0, "num_replicas": 1}  # a finished epoch: the next one


def test_length_bucketing_ddp_ranks_resume_their_own_batches():
    for rank in (0, 1):
        whole = _whole(_bucketed(203, 16, world=2, rank=rank))
        assert _interrupted(lambda r=rank: _bucketed(203, 16, world=2, rank=r), 1, 3) == whole
    epochs = [_whole(_bucketed(203, 16, world=2, rank=r)) for r in (0, 1)]
    assert len(epochs[0]) == len(epochs[1]) == 2 * 7  # 12 full batches + 1 short: 7 steps each, one batch repeated
    first = [x for r in epochs for b in r[:7] for x in b]
    assert len(first) == 203 + 16 and sorted(set(first)) == list(range(203))


class _RecordBatches(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[list[int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.batches.append(batch.tolist())
        return self.weight.sum() * batch.float().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_resumes_length_bucketing_mid_epoch_and_at_the_epoch_end(tmp_path: Path):
    """Checkpoints after step 3 (mid-epoch 0) and step 13 (its end), each resumed by Lightning in a fresh process
    state: the resumed run trains on exactly the batches the uninterrupted run trained on after that step."""
    trainer_kwargs = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "max_epochs": EPOCHS,
    }
    whole = _RecordBatches()
    L.Trainer(enable_checkpointing=False, **trainer_kwargs).fit(whole, _bucketed(203, 16))
    assert whole.batches == _whole(_bucketed(203, 16))  # Lightning sets the epoch: 26 batches, two orders
    every_step = L.pytorch.callbacks.ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=1, save_top_k=-1)
    L.Trainer(callbacks=[every_step], max_steps=14, **trainer_kwargs).fit(_RecordBatches(), _bucketed(203, 16))
    for step in (3, 13):
        resumed = _RecordBatches()
        trainer = L.Trainer(enable_checkpointing=False, **trainer_kwargs)
        trainer.fit(resumed, _bucketed(203, 16), ckpt_path=tmp_path / f"step={step}.ckpt")
        assert resumed.batches == whole.batches[step:], f"resumed from step {step}"


def test_ctr_length_bucketing_loader_resumes_mid_epoch(ml100k_dir: Path, tmp_path: Path):
    dm = BehaviourLogDataModule(
        data_dir=str(tmp_path), root=str(ml100k_dir), batch_size=16, max_length=128, length_bucketing=True
    )
    dm.setup()

    def make() -> ResumableDataLoader:
        torch.manual_seed(3)
        return dm.train_dataloader()

    assert isinstance(make().sampler, LengthGroupedSampler) and isinstance(make(), ResumableDataLoader)
    assert _interrupted(make, 0, 5) == _whole(make())


# ------------------------------------------------------------------------------- the baselines' DataModules
def _sequences(ml100k_dir: Path, tmp_path: Path) -> SequenceDataModule:
    dm = SequenceDataModule(data_dir=str(tmp_path / "cache"), root=str(ml100k_dir), tokenizer=None, batch_size=2)
    dm.setup()
    return dm


def _features(ml100k_dir: Path, tmp_path: Path) -> FeatureDataModule:
    behaviour = BehaviourLogDataModule(data_dir=str(tmp_path / "cache"), root=str(ml100k_dir), cache=False)
    dm = FeatureDataModule(behaviour, batch_size=32)
    dm.setup()
    return dm


@pytest.mark.parametrize("build", [_sequences, _features], ids=["SequenceDataModule", "FeatureDataModule"])
def test_baseline_training_order_is_seeded_and_resumes_mid_epoch(build, ml100k_dir: Path, tmp_path: Path):
    dm = build(ml100k_dir, tmp_path)

    def make() -> ResumableDataLoader:
        torch.manual_seed(3)
        loader = dm.train_dataloader()
        torch.rand(5)  # the global RNG moves on (model init, dropout): the order must not follow it
        return loader

    whole = _whole(make())
    assert isinstance(make(), ResumableDataLoader) and whole[: len(whole) // 2] != whole[len(whole) // 2 :]
    assert _interrupted(make, 0, 3) == whole and _interrupted(make, 1, 1) == whole


@pytest.mark.parametrize("build", [_sequences, _features], ids=["SequenceDataModule", "FeatureDataModule"])
def test_baseline_ddp_ranks_train_on_disjoint_shards_and_evaluate_each_row_once(
    build, ml100k_dir: Path, tmp_path: Path
):
    dm = build(ml100k_dir, tmp_path)
    train, valid = [], []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what DDP's rank r sees
        torch.manual_seed(3)
        train.append(list(dm.train_dataloader().sampler))
        valid.append(list(dm.val_dataloader().sampler))
    n_train, n_valid = len(dm.datasets["train"]), len(dm.datasets["valid"])
    assert len(train[0]) == len(train[1]) == n_train // 2 and not set(train[0]) & set(train[1])
    assert sorted(valid[0] + valid[1]) == list(range(n_valid))  # no padding repeats: exact DDP metrics
