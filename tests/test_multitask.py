"""MultiTaskSystem + MultiTaskDataModule: weighted loss, per-task metrics, heads that sit out a step, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run
from m6rec.build import build_datamodule_and_system
from tests.helpers import compose_config, run_cli

TASKS = ("ctr", "rating", "retrieval")


def _overrides(ml100k_dir: Path, tmp_path: Path) -> list[str]:
    roots = [f"data.datamodules.{t}.root={ml100k_dir}" for t in TASKS]
    batches = [f"data.datamodules.{t}.batch_size=32" for t in TASKS]
    return ["experiment=multitask", *roots, *batches, f"paths.data_dir={tmp_path / 'cache'}"]


def test_fast_dev_run_logs_every_task_metric(tmp_path: Path, ml100k_dir: Path):
    cfg = compose_config(
        [
            *_overrides(ml100k_dir, tmp_path),
            "~logger",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    metrics = run.train(cfg)
    for key in ("test/ctr/auc", "test/ctr/gauc", "test/rating/rmse", "test/retrieval/ndcg@10", "test/retrieval/hr@20"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert set(metrics["data"]) == set(TASKS)


def test_loss_is_the_weighted_sum_of_the_task_losses(tmp_path: Path, ml100k_dir: Path):
    cfg = compose_config([*_overrides(ml100k_dir, tmp_path), "task.tasks.rating.weight=0.25"], tmp_path)
    datamodule, system = build_datamodule_and_system(cfg)
    datamodule.setup("fit")
    batch = {name: next(iter(dm.train_dataloader())) for name, dm in datamodule.datamodules.items()}
    by_hand = sum(
        w * system.parts[name].loss(batch[name]) for name, w in (("ctr", 1.0), ("rating", 0.25), ("retrieval", 0.5))
    )
    assert system.training_step(batch, 0).item() == pytest.approx(by_hand.item(), rel=1e-6)
    # the three heads share one backbone: its parameters are counted once
    backbone = {id(p) for p in system.parts["ctr"].model.backbone.parameters()}
    assert backbone == {id(p) for p in system.parts["rating"].model.backbone.parameters()}
    total = sum(p.numel() for p in system.parameters())
    assert total == sum(p.numel() for p in {id(p): p for p in system.parts.parameters()}.values())


def test_a_task_without_a_batch_gets_zero_gradients_not_none(tmp_path: Path, ml100k_dir: Path):
    """In CombinedLoader's max_size mode an exhausted task yields None; its head must still join the graph (DDP)."""
    cfg = compose_config(_overrides(ml100k_dir, tmp_path), tmp_path)
    datamodule, system = build_datamodule_and_system(cfg)
    datamodule.setup("fit")
    batch = {"ctr": next(iter(datamodule.datamodules["ctr"].train_dataloader())), "rating": None, "retrieval": None}
    system.training_step(batch, 0).backward()
    rating_head = system.parts["rating"].model.head
    assert rating_head.weight.grad is not None and torch.count_nonzero(rating_head.weight.grad) == 0
    assert torch.count_nonzero(system.parts["ctr"].model.head.weight.grad) > 0


@pytest.mark.slow  # two DDP processes through the CLI: the slow tier, still run by CI
def test_ddp_with_a_task_that_runs_out_of_batches(tmp_path: Path, ml100k_dir: Path):
    """2 CPU ranks, max_size mode, the rating task exhausted after one step: DDP must not stall or raise."""
    run_cli(
        [
            *_overrides(ml100k_dir, tmp_path),
            "trainer=ddp_cpu",
            "logger=csv",
            "data.mode=max_size",
            "data.datamodules.rating.batch_size=256",
            "trainer.max_epochs=1",
        ],
        tmp_path,
    )
    (out,) = tmp_path.glob("logs/multitask/runs/*/metrics.json")
    metrics = json.loads(out.read_text())
    assert {"test/ctr/auc", "test/rating/rmse", "test/retrieval/mrr@10"} <= set(metrics)


def test_tasks_must_share_a_tokenizer(tmp_path: Path, ml100k_dir: Path):
    cfg = compose_config([*_overrides(ml100k_dir, tmp_path), "data.datamodules.rating.vocab_size=300"], tmp_path)
    with pytest.raises(ValueError, match=r"data.datamodules.rating: tokenizer differs from data.datamodules.ctr's"):
        build_datamodule_and_system(cfg)
