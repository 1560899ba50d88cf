"""benchmarks/quality.py: a row's `before` job (the run its model starts from) runs first, same seed, once per process;
`--merge` folds record files written by parallel jobs into one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import quality


def test_before_job_runs_first_and_counts_in_wall_and_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_job(out: Path, overrides: list[str], extra: list[str], seed: int, reuse: bool) -> dict:
        calls.append((out, overrides, seed, reuse))
        return {"test/auc": 0.7, "wall_s": 10.0 * len(calls), "command": "python run.py " + " ".join(overrides)}

    monkeypatch.setattr(quality, "run_job", fake_job)
    monkeypatch.setattr(quality, "BEFORE_RUNS", {})
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

    monkeypatch.setattr(quality, "run_job", fake_job)
    monkeypatch.setattr(quality, "BEFORE_RUNS", {})
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


def test_merge_folds_parallel_record_files_by_seed_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(quality, "run_job", lambda *a, **k: pytest.fail("--merge must not run a job"))

    def rec(model: str, seed: int, ndcg: float) -> dict:
        return {"protocol": "P1", "model": model, "seed": seed, "metrics": {"NDCG@10": ndcg}, "wall_s": 1.0}

    out, a, b = tmp_path / "results.json", tmp_path / "a.json", tmp_path / "b.json"
    out.write_text(json.dumps([rec("sasrec", 0, 0.10), rec("sasrec", 1, 0.11), rec("pop", 0, 0.04)]))
    a.write_text(json.dumps([rec("sasrec", 1, 0.12), rec("sasrec", 2, 0.13)]))
    b.write_text(json.dumps([rec("sasrec", 2, 0.14)]))
    merged = quality.main(["--out", str(out), "--merge", str(a), str(b)])
    values = {(r["model"], r["seed"]): r["metrics"]["NDCG@10"] for r in json.loads(out.read_text())}
    assert values == {("sasrec", 0): 0.10, ("sasrec", 1): 0.12, ("sasrec", 2): 0.14, ("pop", 0): 0.04}
    assert len(merged) == 4
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "records"}')
    with pytest.raises(SystemExit, match=r"--merge .*bad.json: not a quality.py record file \(TypeError"):
        quality.main(["--out", str(out), "--merge", str(bad)])
    assert json.loads(out.read_text()) == merged  # a failed merge leaves the file as it was
