"""benchmarks/grid.py: one grid for several quality.py rows, chosen per row by mean validation over the grid seeds,
the chosen point then run on the remaining seeds; every job gets --extra, a row's `before` job runs once per seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import grid

quality = grid.quality  # the module grid.py imports (benchmarks/ is on its sys.path), patched below

ROWS = [
    {"protocol": "P1", "model": "a", "lm_based": False, "id_tokens": True, "overrides": ["experiment=p1_sasrec"]},
    {
        "protocol": "P1",
        "model": "b",
        "lm_based": True,
        "id_tokens": True,
        "before": ["experiment=p1_sasrec_text"],
        "overrides": ["experiment=p1_sasrec_hybrid_from_text", "init_weights.path={before}"],
    },
]


def fake_job(calls: list):
    def job(out: Path, overrides: list[str], extra: list[str], seed: int, reuse: bool) -> dict:
        calls.append((out, overrides, extra, seed))
        lr = next((float(o.split("=")[1]) for o in [*overrides, *extra] if o.startswith("lr=")), 0.0)
        prefers_low_lr = "experiment=p1_sasrec_hybrid_from_text" in overrides  # row b's best lr is 1, row a's 2
        val = (-lr if prefers_low_lr else lr) + 0.001 * seed
        return {"val/ndcg@10": val, "test/ndcg@10": val / 2, "wall_s": 1.0, "command": " ".join(overrides)}

    return job


def test_grid_chooses_per_row_by_mean_validation_and_runs_the_rest_of_the_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = []
    monkeypatch.setattr(quality, "run_job", fake_job(calls))
    monkeypatch.setattr(quality, "BEFORE_RUNS", {})
    monkeypatch.setattr(quality, "MODELS", ROWS)
    out = tmp_path / "grid.json"
    records = grid.main(
        ["--models", "a", "b", "--grid", "lr=1,2", "--grid-seeds", "0", "1", "--seeds", "0", "1", "2"]
        + ["--extra", "trainer.accelerator=gpu", "--log-dir", str(tmp_path), "--jobs", "3", "--out", str(out)]
    )
    befores = [c for c in calls if c[1] == ["experiment=p1_sasrec_text"]]
    assert sorted(c[3] for c in befores) == [0, 1, 2]  # b's stage one: once per seed, grid and final seeds alike
    assert all(c[2][-1] == "trainer.accelerator=gpu" for c in calls)  # --extra reaches every job, `before` included
    assert len(calls) == 3 + 2 * 2 * 2 + 2  # befores, 2 rows x 2 points x 2 grid seeds, the chosen point on seed 2
    chosen = {(r["model"], tuple(r["point"])) for r in records if r["chosen"]}
    assert chosen == {("a", ("lr=2",)), ("b", ("lr=1",))}
    final = sorted((r["model"], r["seed"]) for r in records if r["chosen"])
    assert final == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    run_b = tmp_path / "quality" / "P1" / "b" / "lr-1" / "seed2"
    before_b = tmp_path / "quality" / "P1" / "before" / "experiment-p1_sasrec_text" / "seed2"
    overrides_b = ["experiment=p1_sasrec_hybrid_from_text", f"init_weights.path={before_b}"]
    assert (run_b, overrides_b, ["lr=1", "trainer.accelerator=gpu"], 2) in calls
    assert json.loads(out.read_text()) == records


def test_grid_rejects_a_bad_axis_and_an_unknown_row(tmp_path: Path):
    with pytest.raises(SystemExit, match="--grid 'lr': expected key=value1,value2"):
        grid.parse_grid(["lr"])
    with pytest.raises(SystemExit, match=r"--models \['nope'\]: not rows of benchmarks/quality.py"):
        grid.main(["--models", "nope", "--grid", "lr=1", "--out", str(tmp_path / "x.json")])
