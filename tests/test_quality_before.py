"""benchmarks/quality.py: a row's `before` job (the pretraining its model starts from) runs first, same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import quality


def test_before_job_runs_first_and_counts_in_wall_and_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_job(out: Path, overrides: list[str], extra: list[str], seed: int, reuse: bool) -> dict:
        calls.append((out, overrides, seed, reuse))
        return {"test/auc": 0.7, "wall_s": 10.0 * len(calls), "command": "python run.py " + " ".join(overrides)}

    monkeypatch.setattr(quality, "_run_job", fake_job)
    monkeypatch.setattr(quality, "_BEFORE_RUNS", {})
    row = {
        "protocol": "P2",
        "model": "m",
        "before": ["experiment=pretrain_lm_id_tokens"],
        "overrides": ["experiment=ctr_lora", "model.backbone.path={before}/hf"],
    }
    metrics = quality.run_once(row, [], "default", 3, tmp_path, reuse=True)
    pretrain = tmp_path / "quality" / "P2" / "before" / "experiment-pretrain_lm_id_tokens" / "seed3"
    assert calls == [
        (pretrain, ["experiment=pretrain_lm_id_tokens"], 3, True),
        (
            tmp_path / "quality" / "P2" / "m" / "default" / "seed3",
            ["experiment=ctr_lora", f"model.backbone.path={pretrain}/hf"],
            3,
            True,
        ),
    ]
    assert metrics["wall_s"] == 10.0 + 20.0
    assert (
        metrics["command"] == f"python run.py experiment=pretrain_lm_id_tokens && python run.py {' '.join(calls[1][1])}"
    )
    calls.clear()
    plain = {**row, "before": None, "overrides": ["experiment=ctr_lora", "seed={seed}"]}
    assert quality.run_once(plain, [], "default", 3, tmp_path, reuse=False)["wall_s"] == 10.0
    assert calls == [
        (tmp_path / "quality" / "P2" / "m" / "default" / "seed3", ["experiment=ctr_lora", "seed=3"], 3, False)
    ]
    with pytest.raises(ValueError, match=r"quality row m: its overrides name \{before\} but it has no `before` job"):
        quality.resolved_overrides({**row, "before": None}, "default", 3, tmp_path)


def test_rows_with_the_same_before_job_share_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_job(out: Path, overrides: list[str], extra: list[str], seed: int, reuse: bool) -> dict:
        calls.append(out)
        return {"val/ndcg@10": 0.1, "wall_s": 5.0, "command": "python run.py " + " ".join(overrides)}

    monkeypatch.setattr(quality, "_run_job", fake_job)
    monkeypatch.setattr(quality, "_BEFORE_RUNS", {})
    before = ["experiment=p1_sasrec_text", "trainer.max_epochs=40", "hydra.job.name=a/b c"]
    rows = [
        {"protocol": "P1", "model": name, "before": before, "overrides": ["init_weights.path={before}", f"x={name}"]}
        for name in ("first", "second")
    ]
    walls = [quality.run_once(row, [], "default", 1, tmp_path, reuse=False)["wall_s"] for row in rows]
    shared = tmp_path / "quality" / "P1" / "before"
    shared = shared / "experiment-p1_sasrec_text__trainer.max_epochs-40__hydra.job.name-a_b_c" / "seed1"
    assert calls == [shared, tmp_path / "quality/P1/first/default/seed1", tmp_path / "quality/P1/second/default/seed1"]
    assert walls == [10.0, 10.0]  # each row's wall still counts the before job it starts from
