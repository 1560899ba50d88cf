"""Faults that hit a running job: NaN training, signals, crashed W&B jobs, kill -9 and exact resume, one-line exits
at the command line (bad input: tests/test_faults.py). Each asserts the error or exit code, the one line (naming the
step or key), and what is left behind (the last good checkpoint, no metrics.json)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run
from m6rec.systems.guards import PREEMPTED_EXIT_CODE, NonFiniteError
from m6rec.utils.errors import exit_code, one_line, user_error
from tests.helpers import FAULT_RUN, ROOT, compose_config, fault_config, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- NaN / inf guard
def test_a_diverging_run_stops_at_the_bad_step_and_keeps_the_last_good_checkpoint(tmp_path: Path, ml100k_dir: Path):
    cfg = fault_config(
        tmp_path,
        ml100k_dir,
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=tests.helpers.PoisonWeights",
        "+callbacks.poison.step=11",
    )
    with pytest.raises(NonFiniteError) as info:
        run.train(cfg)
    assert one_line(info.value) == (
        "NonFiniteError: training loss is nan at step 11 (epoch 1); lower task.optimizer.lr or check the data"
    )
    assert exit_code(info.value) == 1 and user_error(info.value) is info.value
    out = tmp_path / "run"
    assert not (out / "metrics.json").exists()
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 8 and last["epoch"] == 0  # the end of epoch 0: the NaN state was never saved
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


def test_a_huge_learning_rate_is_caught_as_a_non_finite_gradient(tmp_path: Path, ml100k_dir: Path):
    with pytest.raises(NonFiniteError, match=r"^gradient norm is (inf|nan) at step \d+ \(epoch 0\)"):
        run.train(fault_config(tmp_path, ml100k_dir, "task.optimizer.lr=1e6", "peft=none"))
    assert not (tmp_path / "run" / "metrics.json").exists()


# ------------------------------------------------------------------------------- preemption (real signals)
def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(ROOT),
        "M6REC_ROOT": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, str(ROOT / "run.py"), *args, f"paths.log_dir={tmp_path / 'logs'}"]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow  # a real run.py subprocess and a real signal (~30 s each)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_a_checkpoint_and_exits_non_zero(signum: int, tmp_path: Path, ml100k_dir: Path):
    from m6rec.compare import collect_runs

    marker = tmp_path / "paused"
    proc = _start(
        [
            *FAULT_RUN,
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=3",
            "+callbacks.pause._target_=tests.helpers.PauseAt",
            "+callbacks.pause.step=11",
            f"+callbacks.pause.marker={marker}",
        ],
        tmp_path,
    )
    _wait_for(marker, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, stderr[-3000:]
    run_dir = next(tmp_path.glob("logs/ctr_lora/runs/*"))
    assert not (run_dir / "metrics.json").exists()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] in (11, 12) and last["epoch"] == 1  # mid-epoch 1 (8 steps an epoch)
    _, failed = collect_runs([run_dir.parent])
    assert failed == [run_dir]  # what a sweep summary lists: a failed job


# ------------------------------------------------------------------------------- W&B: one finished run per job
@pytest.mark.slow  # a two-job CLI multirun with W&B offline (~40 s)
def test_a_crashed_job_finishes_its_wandb_run_as_failed_and_the_next_job_gets_its_own(tmp_path: Path, ml100k_dir: Path):
    proc = run_cli(
        [
            "-m",
            "experiment=ctr_lora",
            "logger=wandb",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'cache'}",
            "data.max_length=5,64",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
        env={"WANDB_MODE": "offline"},
        check=False,
    )
    assert proc.returncode == 1 and "data.max_length=5 is too small" in proc.stderr
    jobs = sorted(p for p in tmp_path.glob("logs/ctr_lora/multiruns/*/*") if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    runs = [list((job / "wandb").glob("offline-run-*")) for job in jobs]
    assert [len(r) for r in runs] == [1, 1]  # two jobs, two runs
    crashed, finished = (r[0] for r in runs)
    assert "got exitcode: 1" in (crashed / "logs" / "debug.log").read_text()  # finished as failed
    assert "got exitcode: 0" in (finished / "logs" / "debug.log").read_text()
    record = next(finished.glob("run-*.wandb")).read_bytes()  # the offline run's protobuf log: its own job name
    assert b"data.max_length=64,trainer" in record and b"data.max_length=5,trainer" not in record, record
    assert "too small" not in (finished / "files" / "output.log").read_text()


@pytest.mark.slow  # in-process, but W&B starts its service process (~20 s)
def test_secrets_in_the_environment_are_never_written_to_the_run_folder(tmp_path: Path, ml100k_dir: Path, monkeypatch):
    secret = "s3cr3t" + "x" * 34
    for name, value in (("WANDB_API_KEY", secret), ("HF_TOKEN", f"hf_{secret}"), ("WANDB_MODE", "offline")):
        monkeypatch.setenv(name, value)
    cfg = compose_config(
        [
            *FAULT_RUN,
            "logger=wandb",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'cache'}",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path / "run",
    )
    run.train(cfg)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {"config_resolved.yaml", "environment.json", "metrics.json", "debug.log"} <= {p.name for p in files}
    assert any(p.name.endswith(".wandb") for p in files)  # W&B's own run record is searched too
    assert [p for p in files if secret.encode() in p.read_bytes()] == []


@pytest.mark.slow  # W&B online against a closed local port: falls back to offline (~60 s)
def test_wandb_online_with_an_unreachable_server_falls_back_to_offline(tmp_path: Path, ml100k_dir: Path):
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_API_KEY": "0" * 40,
        "WANDB_INIT_TIMEOUT": "5",
    }
    proc = run_cli(
        [
            "experiment=ctr_lora",
            "logger=wandb",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'cache'}",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
        env=env,
    )
    run_dir = next(tmp_path.glob("logs/ctr_lora/runs/*"))
    assert (run_dir / "metrics.json").exists() and len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert "W&B server unreachable" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------- kill -9 and exact resume
def _test_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))}


@pytest.mark.slow  # five real run.py processes, three of them killed with SIGKILL (~3 min)
def test_killed_three_times_then_resumed_ends_where_the_uninterrupted_run_ends(tmp_path: Path, ml100k_dir: Path):
    args = [
        *FAULT_RUN,
        f"data.root={ml100k_dir}",
        f"paths.data_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=3",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "peft.lora_dropout=0.1",
        "seed=5",
    ]
    (tmp_path / "whole").mkdir()
    run_cli(args, tmp_path / "whole")  # the uninterrupted run, logs under whole/logs
    expected = _test_metrics(next((tmp_path / "whole" / "logs").glob("ctr_lora/runs/*")))

    steps = tmp_path / "step"
    rng = random.Random(13)
    kills = sorted(rng.sample(range(2, 24), 3))  # 24 steps in all (8 an epoch)
    for kill_at in kills:
        steps.unlink(missing_ok=True)
        proc = _start(
            [
                *args,
                "ckpt_path=last",
                "+callbacks.steps._target_=tests.helpers.StepFile",
                f"+callbacks.steps.path={steps}",
            ],
            tmp_path,
        )
        deadline = time.time() + 300
        while _step(steps) < kill_at:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler runs
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
    final = run_cli([*args, "ckpt_path=last"], tmp_path)
    assert "ckpt_path=last: resuming from" in final.stdout + final.stderr
    runs = sorted((tmp_path / "logs").glob("ctr_lora/runs/*"))
    assert len(runs) == 4 and [r for r in runs if (r / "metrics.json").exists()] == [runs[-1]]
    got = _test_metrics(runs[-1])
    assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) <= 1e-6 for k in got), (kills, got, expected)


def _step(path: Path) -> int:
    """The step StepFile last wrote to `path`, -1 before the first write."""
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return -1


# ------------------------------------------------------------------------------- exact resume, in-process
@pytest.mark.parametrize("order", [[], ["data.length_bucketing=true"]], ids=["shuffled", "length_bucketing"])
def test_a_run_resumed_mid_epoch_from_ckpt_path_last_matches_the_uninterrupted_run(
    order: list[str], tmp_path: Path, ml100k_dir: Path
):
    runs = tmp_path / "logs" / "runs"

    def cfg(out: Path, *overrides: str):
        return compose_config(
            [
                *FAULT_RUN,
                f"data.root={ml100k_dir}",
                f"paths.data_dir={tmp_path / 'cache'}",
                "~logger",
                "trainer.max_epochs=2",
                "callbacks.step_checkpoint.every_n_train_steps=3",
                "peft.lora_dropout=0.1",
                *order,
                *overrides,
            ],
            out,
        )

    whole = run.train(cfg(tmp_path / "whole"))
    with pytest.raises(RuntimeError, match="crash at step 7"):  # mid-epoch 0 (8 steps an epoch), after step_6
        run.train(cfg(runs / "a", "+callbacks.crash._target_=tests.helpers.CrashAt", "+callbacks.crash.step=7"))
    assert sorted(p.name for p in (runs / "a" / "checkpoints").iterdir()) == ["step_0000006.ckpt"]
    resumed = run.train(cfg(runs / "b", "ckpt_path=last"))
    for key in ("val/auc", "test/auc", "test/logloss", "test/acc"):
        assert resumed[key] == whole[key], key  # bit-identical: same order, same RNG, same best epoch


def test_ckpt_path_last_finds_the_newest_checkpoint_of_this_task_or_this_sweep_job(tmp_path: Path):
    from m6rec.systems.resume import newest_checkpoint

    def ckpt(path: str, mtime: int) -> Path:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
        os.utime(tmp_path / path, (mtime, mtime))
        return tmp_path / path

    assert newest_checkpoint(tmp_path / "runs" / "now", multirun=False) is None  # nothing yet: start from scratch
    ckpt("runs/t1/checkpoints/step_0000006.ckpt", 100)
    newest = ckpt("runs/t2/hpc_ckpt_1.ckpt", 300)  # SLURM's requeue checkpoint counts too
    ckpt("runs/t3/checkpoints/last.ckpt", 200)
    ckpt("multiruns/s1/1/checkpoints/last.ckpt", 900)  # a sweep's checkpoint is not a single run's
    assert newest_checkpoint(tmp_path / "runs" / "now", multirun=False) == newest
    job0 = ckpt("multiruns/s1/0/checkpoints/last.ckpt", 400)
    ckpt("multiruns/s2/1/checkpoints/step_0000003.ckpt", 950)  # job 1: another job's
    assert newest_checkpoint(tmp_path / "multiruns" / "s2" / "0", multirun=True) == job0


def test_a_resumed_run_in_a_new_folder_keeps_the_best_score_so_far(tmp_path: Path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from m6rec.systems.resume import ResumableModelCheckpoint

    before = ModelCheckpoint(tmp_path / "a", monitor="val/auc", mode="max")
    before.best_model_score, before.best_model_path = torch.tensor(0.71), str(tmp_path / "a" / "epoch_000.ckpt")
    before.best_k_models, before.kth_value = {before.best_model_path: torch.tensor(0.71)}, torch.tensor(0.71)
    state = before.state_dict()
    plain, resumed = (
        cls(tmp_path / "b", monitor="val/auc", mode="max") for cls in (ModelCheckpoint, ResumableModelCheckpoint)
    )
    plain.load_state_dict(state)
    resumed.load_state_dict(state)
    assert plain.best_model_score is None  # Lightning forgets it when dirpath changes: the next epoch would be "best"
    assert float(resumed.best_model_score) == pytest.approx(0.71) and float(resumed.kth_value) == pytest.approx(0.71)
    assert resumed.best_k_models == before.best_k_models and resumed.best_model_path == before.best_model_path


@pytest.mark.slow  # three real run.py processes (~45 s)
@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("data.batch_size=abc", "Error: ConfigError: data.batch_size: expected int, got 'abc' (str)"),
        ("experiment=nope", "Error: MissingConfigException: In 'config': Could not find 'experiment/nope'"),
        ("hydra.run.dir={tmp}/a_file/run", "Error: NotADirectoryError: [Errno 20] Not a directory: '{tmp}/a_file/run'"),
    ],
)
def test_the_command_line_prints_one_line_and_exits_2(override: str, line: str, tmp_path: Path, ml100k_dir: Path):
    (tmp_path / "a_file").touch()  # an output folder that cannot be made (as root, a read-only one still can)
    override, line = override.format(tmp=tmp_path), line.format(tmp=tmp_path)
    proc = run_cli([*FAULT_RUN, f"data.root={ml100k_dir}", override], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
    assert not list(tmp_path.glob("logs/*/runs/*/config_resolved.yaml"))  # nothing half-written
