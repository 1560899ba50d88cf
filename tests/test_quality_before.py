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
    row = {
        "protocol": "P2",
        "model": "m",
        "before": ["experiment=pretrain_lm_id_tokens"],
        "overrides": ["experiment=ctr_lora", "model.backbone.path={before}/hf"],
    }
    metrics = quality.run_once(row, [], "default", 3, tmp_path, reuse=True)
    pretrain = tmp_path / "quality" / "P2" / "m" / "default_before" / "seed3"
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
