"""m6rec.compare: offline comparison of Hydra job directories (fake jobs in the exact layout run.py writes)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from m6rec.compare import collect_runs, compare, main

ROOT = Path(__file__).resolve().parents[1]
AUC = {"lora": [0.71, 0.73, 0.72], "none": [0.65, 0.69, 0.64]}  # by seed 0, 1, 2
TRAINABLE = {"lora": 32833, "none": 411009}


def make_job(job: Path, overrides: list[str], choices: dict, config: dict, metrics: dict | str | None) -> Path:
    """A job dir as Hydra + run.py leave it; `metrics=None` is a crash, a string is written verbatim."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"run": {"dir": str(job)}, "runtime": {"version": "1.3.2", "choices": choices}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (job / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return job


def ctr_job(job: Path, peft: str, seed: int, metrics: dict | str | None, lr: float = 1e-3) -> Path:
    config = {"seed": seed, "task_name": "ctr_lora", "peft": {"name": peft}, "task": {"optimizer": {"lr": lr}}}
    choices = {"experiment": "ctr_lora", "task": "ctr", "peft": peft, "hydra/launcher": "basic"}
    return make_job(job, ["experiment=ctr_lora", f"peft={peft}", f"seed={seed}"], choices, config, metrics)


def metrics_for(peft: str, seed: int) -> dict:
    auc = AUC[peft][seed]
    params = {"trainable": TRAINABLE[peft], "total": 411009, "trainable_pct": 100 * TRAINABLE[peft] / 411009}
    return {
        "test/auc": auc,
        "test/logloss": 1 - auc,
        "val/auc": auc - 0.01,
        "wall_time_s": 100.0 + seed,
        "params": params,
        "data": {"users": 943, "fingerprint": "e251602084228971"},
        "best_checkpoint": "x.ckpt",
        "converged": True,
    }


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """`-m experiment=ctr_lora peft=lora,none seed=0,1,2` plus a crashed job and one with a corrupt metrics.json."""
    root = tmp_path / "logs" / "ctr_lora" / "multiruns" / "2026-01-01_00-00-00"
    for i, (peft, seed) in enumerate((p, s) for p in AUC for s in range(3)):
        ctr_job(root / str(i), peft, seed, metrics_for(peft, seed))
    ctr_job(root / "6", "none", 3, None)
    ctr_job(root / "7", "none", 4, '{"test/auc": 0.99,')
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def sample_std(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def test_collect_runs_flattens_numeric_metrics_and_lists_failures(multirun: Path):
    runs, failed = collect_runs([multirun])
    assert len(runs) == 6 and sorted(p.name for p in failed) == ["6", "7"]
    assert [p.name for p in runs["path"]] == [str(i) for i in range(6)]
    first = runs.iloc[0]
    assert first["seed"] == 0 and first["overrides"] == {"experiment": "ctr_lora", "peft": "lora", "seed": "0"}
    assert first["choices"]["peft"] == "lora" and first["config"]["task"]["optimizer"]["lr"] == 1e-3
    assert first["params.trainable"] == TRAINABLE["lora"] and first["data.users"] == 943
    assert "data.fingerprint" not in runs and "best_checkpoint" not in runs and "converged" not in runs


def test_compare_groups_by_the_varying_override_with_exact_stats(multirun: Path):
    df = compare([multirun], "test/auc", None)
    assert df.attrs["by"] == ["peft"]  # seed varies too, but is never a grouping key
    assert list(df.columns) == ["peft", "n", "mean", "std", "best", "params_trainable", "wall_time_s"]
    assert list(df["peft"]) == ["lora", "none"]  # best mean first
    assert list(df["n"]) == [3, 3]
    assert df["mean"].tolist() == pytest.approx([(0.71 + 0.73 + 0.72) / 3, (0.65 + 0.69 + 0.64) / 3])
    assert df["mean"].tolist() == pytest.approx([0.72, 0.66])
    assert df["std"].tolist() == pytest.approx([0.01, math.sqrt(0.0007)])
    assert df["std"].tolist() == pytest.approx([sample_std(AUC["lora"]), sample_std(AUC["none"])])
    assert df["best"].tolist() == pytest.approx([0.73, 0.69])
    assert df["params_trainable"].tolist() == pytest.approx([32833, 411009])
    assert df["wall_time_s"].tolist() == pytest.approx([101.0, 101.0])
    assert sorted(p.name for p in df.attrs["failed"]) == ["6", "7"]
    assert "invalid JSON (" in df.attrs["failed"][multirun / "7"]


def test_failed_jobs_do_not_change_the_numbers(multirun: Path, tmp_path: Path):
    clean = tmp_path / "clean"
    for i in range(6):
        peft, seed = ("lora", "none")[i // 3], i % 3
        ctr_job(clean / str(i), peft, seed, metrics_for(peft, seed))
    with_failures, without = compare([multirun], "test/auc", None), compare([clean], "test/auc", None)
    assert not without.attrs["failed"] and len(with_failures.attrs["failed"]) == 2
    cols = ["peft", "n", "mean", "std", "best"]
    assert with_failures[cols].equals(without[cols])


def test_lower_is_better_flips_order_and_best(multirun: Path):
    df = compare([multirun], "test/logloss", ["peft"], lower_is_better=True)
    assert list(df["peft"]) == ["lora", "none"]
    assert df["best"].tolist() == pytest.approx([1 - 0.73, 1 - 0.69])
    df = compare([multirun], "test/auc", ["peft"], lower_is_better=True)
    assert list(df["peft"]) == ["none", "lora"] and df["best"].tolist() == pytest.approx([0.64, 0.71])


def test_group_by_dotted_config_path(tmp_path: Path):
    ctr_job(tmp_path / "a", "lora", 0, {"test/auc": 0.70}, lr=1e-3)
    b = ctr_job(tmp_path / "b", "lora", 1, {"test/auc": 0.74}, lr=1e-3)
    (b / ".hydra" / "overrides.yaml").write_text("- experiment=ctr_lora\n- seed=1\n- task.optimizer.lr=1e-3\n")
    ctr_job(tmp_path / "c", "lora", 0, {"test/auc": 0.60}, lr=3e-4)
    df = compare([tmp_path], "test/auc", ["task.optimizer.lr"])
    assert list(df["task.optimizer.lr"]) == ["0.001", "0.0003"]  # the override "1e-3" joins the config's 0.001
    assert list(df["n"]) == [2, 1] and df["mean"].tolist() == pytest.approx([0.72, 0.60])
    assert df["std"].iloc[0] == pytest.approx(sample_std([0.70, 0.74])) and math.isnan(df["std"].iloc[1])
    df = compare([tmp_path], "test/auc", ["peft", "task.optimizer.lr"])
    assert list(df.columns[:3]) == ["peft", "task.optimizer.lr", "n"] and list(df["peft"]) == ["lora", "lora"]


def test_main_prints_table_and_writes_markdown_and_png(multirun: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    assert main([str(multirun), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    for cell in ("lora", "none", "0.7200 ± 0.0100", f"0.6600 ± {math.sqrt(0.0007):.4f}", "0.7300", "32,833"):
        assert cell in printed.out
    assert "6 finished job(s), 2 failed" in printed.out
    assert f"{multirun / '7'}: invalid JSON (" in printed.err and f"{multirun / '6'}: no metrics.json" in printed.err
    md = (out / "comparison.md").read_text()
    assert "`test/auc`" in md and f"python -m m6rec.compare {multirun} --out {out}" in md
    assert "| peft | n | mean ± std | best | trainable params | wall time (s) |" in md
    assert "| lora | 3 | 0.7200 ± 0.0100 | 0.7300 | 32,833 | 101.0 |" in md
    assert md.index("| lora |") < md.index("| none |")
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_module_cli_in_a_subprocess(multirun: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "m6rec.compare", str(multirun), "--metric", "val/auc", "--by", "peft"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "lora" in proc.stdout and "0.7100 ± 0.0100" in proc.stdout
    assert "| lora | 3 | 0.7100 ± 0.0100 | 0.7200 |" in (multirun / "comparison.md").read_text()
    assert (multirun / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "no such directory: {missing}"),
        (["{root}", "--metric", "test/nope"], "no job has metric 'test/nope'"),
        (["{root}", "--by", "no.such.key"], "key 'no.such.key'"),
        (["{crashed}"], "no finished jobs under {crashed} (1 failed)"),
    ],
)
def test_user_errors_exit_2_with_one_line(multirun: Path, tmp_path: Path, capsys, args: list[str], message: str):
    crashed = tmp_path / "crashed"
    ctr_job(crashed / "0", "lora", 0, None)
    paths = {"root": multirun, "missing": tmp_path / "nope", "crashed": crashed}
    with pytest.raises(SystemExit) as exc:
        main([a.format(**paths) for a in args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message.format(**paths) in err and len(err.strip().splitlines()) == 1
    assert not (multirun / "comparison.md").exists()
