"""notebooks/ablation_analysis.ipynb on a real (tiny) multirun: the numbers it prints are the jobs' own metrics.
(That it is committed executed, with small outputs, is tested in test_notebooks.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from tests.helpers import ROOT, run_cli

NOTEBOOK = ROOT / "notebooks" / "ablation_analysis.ipynb"
FAST = ["experiment=ctr_lora", "logger=csv", "data.batch_size=32"]
HOW = "python run.py -m experiment=ctr_lora peft=lora,none seed=0,1,2"
OFFLINE = "offline: skipping the W&B API (set WANDB_API_KEY and WANDB_ENTITY to use it)"
FAKE_WANDB = '''\
"""A stand-in for the W&B API: serves the runs in $FAKE_WANDB_RUNS and prints what it was asked for."""
import json
import os
from types import SimpleNamespace


class Api:
    def runs(self, path, filters=None):
        print(f"FAKE_WANDB path={path} filters={json.dumps(filters)}")
        return [SimpleNamespace(**run) for run in json.loads(os.environ["FAKE_WANDB_RUNS"])]
'''


@pytest.fixture(scope="module")
def sweep(ml100k_dir: Path, tmp_path_factory) -> Path:
    """A real multirun of 4 fast_dev_run jobs: peft=lora,none x seed=0,1."""
    tmp = tmp_path_factory.mktemp("sweep")
    data = [f"data.root={ml100k_dir}", f"paths.data_dir={tmp / 'cache'}"]
    run_cli(["-m", *FAST, *data, "peft=lora,none", "seed=0,1", "++trainer.fast_dev_run=true"], tmp)
    dirs = list((tmp / "logs" / "ctr_lora" / "multiruns").iterdir())
    assert len(dirs) == 1, dirs
    assert len(list(dirs[0].glob("*/metrics.json"))) == 4
    return dirs[0]


def _overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


def _jobs(sweep_dir: Path) -> list[dict]:
    """Each finished job's peft choice, seed and test/auc, read straight from its own files."""
    jobs = []
    for metrics in sorted(sweep_dir.glob("*/metrics.json")):
        overrides = dict(o.partition("=")[::2] for o in _overrides(metrics.parent))
        auc = json.loads(metrics.read_text())["test/auc"]
        jobs.append({"peft": overrides["peft"], "seed": int(overrides["seed"]), "test/auc": auc})
    return jobs


def _means(jobs: list[dict]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for job in jobs:
        groups.setdefault(job["peft"], []).append(job["test/auc"])
    return {peft: sum(values) / len(values) for peft, values in groups.items()}


def _execute(monkeypatch, sweep_dir: Path, **env: str) -> tuple[str, str]:
    """Run the notebook top to bottom on `sweep_dir` (W&B API off unless `env` sets WANDB_API_KEY); return the printed
    text and the text/plain of the displayed objects."""
    for name in ("WANDB_API_KEY", "M6REC_METRIC", "M6REC_WANDB_GROUP"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"M6REC_SWEEP_DIR": str(sweep_dir), **env}.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    shown = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs if o["output_type"] == "display_data")
    return printed, shown


def _result(printed: str) -> dict[str, float]:
    lines = [line for line in printed.splitlines() if line.startswith("RESULT_JSON=")]
    assert len(lines) == 1, printed
    return json.loads(lines[0].removeprefix("RESULT_JSON="))


@pytest.mark.slow  # reads a CLI multirun (the `sweep` fixture): the slow tier, still run by CI
def test_the_notebook_compares_a_real_sweep(sweep: Path, monkeypatch):
    before = {p for p in sweep.rglob("*") if p.name != "comparison.png"}
    printed, shown = _execute(monkeypatch, sweep)

    jobs = _jobs(sweep)
    assert sorted((j["peft"], j["seed"]) for j in jobs) == [("lora", 0), ("lora", 1), ("none", 0), ("none", 1)]
    result = _result(printed)
    assert result == pytest.approx(_means(jobs), abs=1e-9) and set(result) == {"lora", "none"}
    assert list(result) == sorted(result, key=result.get, reverse=True)  # best mean first
    for peft in ("lora", "none"):  # the Markdown table: one row per group, n = 2 seeds each
        assert re.search(rf"^\| {peft} \| 2 \| {result[peft]:.4f} ± \d\.\d{{4}} \| ", printed, re.M), printed
    assert "4 finished job(s), 0 failed" in printed and OFFLINE in printed
    for job in jobs:  # the per-job table shows every job's own test/auc
        assert f"{job['test/auc']:.6f}" in shown

    png = sweep / "comparison.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    after = set(sweep.rglob("*"))
    assert after - before == {png}, "the notebook may write nothing but comparison.png"


@pytest.mark.slow  # reads a CLI multirun (the `sweep` fixture): the slow tier, still run by CI
def test_a_crashed_job_is_listed_and_left_out(sweep: Path, monkeypatch, tmp_path: Path):
    copy = shutil.copytree(sweep, tmp_path / sweep.name)
    crashed = next(m for m in sorted(copy.glob("*/metrics.json")) if "peft=none" in _overrides(m.parent))
    crashed.unlink()
    printed, _ = _execute(monkeypatch, copy)

    assert "3 finished job(s), 1 failed" in printed and f"failed (no usable metrics.json): {crashed.parent}" in printed
    assert _result(printed) == pytest.approx(_means(_jobs(copy)), abs=1e-9)
    assert re.search(r"^\| none \| 1 \| \d\.\d{4} ± — \| ", printed, re.M), printed  # one seed: no std
    assert "1 failed job(s), not included:" in printed


@pytest.mark.slow  # reads a CLI multirun (the `sweep` fixture): the slow tier, still run by CI
def test_the_wandb_section_queries_the_sweeps_group(sweep: Path, monkeypatch, tmp_path: Path):
    """With WANDB_API_KEY set the notebook asks the API for the sweep's group and aggregates what it returns
    (a stand-in `wandb` module answers, built from the real jobs, so no server is needed)."""
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "wandb.py").write_text(FAKE_WANDB)
    jobs = _jobs(sweep)
    fake = [
        {
            "name": f"peft={j['peft']},seed={j['seed']}",
            "config": {"seed": j["seed"], "task_name": "ctr_lora"},
            "summary": {"test/auc": j["test/auc"]},
        }
        for j in jobs
    ]
    stub_path = os.pathsep.join(filter(None, [str(tmp_path / "stub"), os.environ.get("PYTHONPATH")]))
    printed, shown = _execute(
        monkeypatch,
        sweep,
        PYTHONPATH=stub_path,
        FAKE_WANDB_RUNS=json.dumps(fake),
        WANDB_API_KEY="not-a-real-key",
        WANDB_ENTITY="my-team",
    )

    group = f"ctr_lora-{sweep.name}"
    assert f'FAKE_WANDB path=my-team/m6rec filters={{"group": "{group}"}}' in printed
    assert f"4 W&B run(s) in my-team/m6rec, group '{group}'" in printed and OFFLINE not in printed
    for mean in _means(jobs).values():
        assert f"{mean:.6f}" in shown


@pytest.mark.parametrize("missing", ["empty", "absent"])
def test_without_finished_jobs_the_notebook_says_how_to_make_a_sweep(missing: str, monkeypatch, tmp_path: Path):
    target = tmp_path / "sweep"
    if missing == "empty":
        target.mkdir()
    printed, _ = _execute(monkeypatch, target)
    assert HOW in printed and "RESULT_JSON" not in printed
    assert ("no finished jobs under" if missing == "empty" else "no multirun found") in printed
    assert not target.exists() or not any(target.iterdir())
