"""`best_checkpoint`: which checkpoint of a run directory the scripts load (recommend, task.features, benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from m6rec.utils.run_record import best_checkpoint


def _run(tmp_path: Path, best: str | None, files: list[str]) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in files:
        (run / "checkpoints" / name).touch()
    if best is not None:
        (run / "metrics.json").write_text(json.dumps({"best_checkpoint": best}))
    return run


def test_metrics_json_names_the_best_checkpoint(tmp_path: Path):
    run = _run(tmp_path, str(tmp_path / "run" / "checkpoints" / "epoch_003.ckpt"), ["epoch_003.ckpt", "last.ckpt"])
    assert best_checkpoint(run) == run / "checkpoints" / "epoch_003.ckpt"
    assert best_checkpoint(run, last_ok=True) == run / "checkpoints" / "epoch_003.ckpt"


def test_a_copied_run_finds_its_best_checkpoint_by_name(tmp_path: Path):
    run = _run(tmp_path, "/elsewhere/run/checkpoints/epoch_007.ckpt", ["epoch_007.ckpt"])
    assert best_checkpoint(run) == run / "checkpoints" / "epoch_007.ckpt"


def test_last_checkpoint_only_when_asked(tmp_path: Path):
    unfinished = _run(tmp_path, None, ["last.ckpt"])
    assert best_checkpoint(unfinished) is None
    assert best_checkpoint(unfinished, last_ok=True) == unfinished / "checkpoints" / "last.ckpt"
    (unfinished / "metrics.json").write_text(json.dumps({"best_checkpoint": ""}))  # trained without a checkpoint
    assert best_checkpoint(unfinished) is None
