"""Faults a hostile user or a cluster throws at a run: NaN training, bad config values, missing folders, signals,
crashed W&B jobs, kill -9 and resume. Each asserts the error class, its one line (naming the key, file or step), the
exit code at the command line, and that nothing half-written is left."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run
from m6rec.data import BehaviourLogDataModule
from m6rec.systems.guards import PREEMPTED_EXIT_CODE, NonFiniteError
from m6rec.utils.errors import ConfigError, exit_code, one_line, run_main, user_error
from tests.helpers import ROOT, compose_config, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["experiment=ctr_lora", "logger=csv", "data.batch_size=32", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary"]  # fmt: skip


def _cfg(tmp_path: Path, ml100k_dir: Path, *overrides: str):
    data = [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "~logger"]
    return compose_config([*FAST, *data, *overrides], tmp_path / "run")


# ------------------------------------------------------------------------------- NaN / inf guard
def test_a_diverging_run_stops_at_the_bad_step_and_keeps_the_last_good_checkpoint(tmp_path: Path, ml100k_dir: Path):
    cfg = _cfg(tmp_path, ml100k_dir, "trainer.max_epochs=3", "+callbacks.poison._target_=tests.helpers.PoisonWeights",
               "+callbacks.poison.step=11")  # fmt: skip
    with pytest.raises(NonFiniteError) as info:
        run.train(cfg)
    assert one_line(info.value) == ("NonFiniteError: training loss is nan at step 11 (epoch 1); lower "
                                    "task.optimizer.lr or check the data")  # fmt: skip
    assert exit_code(info.value) == 1 and user_error(info.value) is info.value
    out = tmp_path / "run"
    assert not (out / "metrics.json").exists()
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 8 and last["epoch"] == 0  # the end of epoch 0: the NaN state was never saved
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


def test_a_huge_learning_rate_is_caught_as_a_non_finite_gradient(tmp_path: Path, ml100k_dir: Path):
    with pytest.raises(NonFiniteError, match=r"^gradient norm is (inf|nan) at step \d+ \(epoch 0\)"):
        run.train(_cfg(tmp_path, ml100k_dir, "task.optimizer.lr=1e6", "peft=none"))
    assert not (tmp_path / "run" / "metrics.json").exists()


# ------------------------------------------------------------------------------- preemption (real signals)
def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "M6REC_ROOT": str(ROOT),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
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
    proc = _start([*FAST, f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "trainer.max_epochs=3",
                   "+callbacks.pause._target_=tests.helpers.PauseAt", "+callbacks.pause.step=11",
                   f"+callbacks.pause.marker={marker}"], tmp_path)  # fmt: skip
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
def test_a_crashed_job_finishes_its_wandb_run_as_failed_and_the_next_job_gets_its_own(tmp_path: Path,
                                                                                       ml100k_dir: Path):  # fmt: skip
    proc = run_cli(["-m", "experiment=ctr_lora", "logger=wandb", f"data.root={ml100k_dir}",
                    f"paths.data_dir={tmp_path / 'cache'}", "data.max_length=5,64", "++trainer.fast_dev_run=true"],
                   tmp_path, env={"WANDB_MODE": "offline"}, check=False)  # fmt: skip
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


@pytest.mark.slow  # W&B online against a closed local port: falls back to offline (~60 s)
def test_wandb_online_with_an_unreachable_server_falls_back_to_offline(tmp_path: Path, ml100k_dir: Path):
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "0" * 40,
           "WANDB_INIT_TIMEOUT": "5"}  # fmt: skip
    proc = run_cli(["experiment=ctr_lora", "logger=wandb", f"data.root={ml100k_dir}",
                    f"paths.data_dir={tmp_path / 'cache'}", "++trainer.fast_dev_run=true"], tmp_path, env=env)
    run_dir = next(tmp_path.glob("logs/ctr_lora/runs/*"))
    assert (run_dir / "metrics.json").exists() and len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert "W&B server unreachable" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------- kill -9 and exact resume
def _test_metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))}


@pytest.mark.slow  # five real run.py processes, three of them killed with SIGKILL (~3 min)
def test_killed_three_times_then_resumed_ends_where_the_uninterrupted_run_ends(tmp_path: Path, ml100k_dir: Path):
    args = [*FAST, f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "trainer.max_epochs=3",
            "callbacks.step_checkpoint.every_n_train_steps=2", "peft.lora_dropout=0.1", "seed=5"]  # fmt: skip
    (tmp_path / "whole").mkdir()
    run_cli(args, tmp_path / "whole")  # the uninterrupted run, logs under whole/logs
    expected = _test_metrics(next((tmp_path / "whole" / "logs").glob("ctr_lora/runs/*")))

    steps = tmp_path / "step"
    rng = random.Random(13)
    kills = sorted(rng.sample(range(2, 24), 3))  # 24 steps in all (8 an epoch)
    for kill_at in kills:
        steps.unlink(missing_ok=True)
        proc = _start([*args, "ckpt_path=last", "+callbacks.steps._target_=tests.helpers.StepFile",
                       f"+callbacks.steps.path={steps}"], tmp_path)  # fmt: skip
        deadline = time.time() + 300
        while not (steps.exists() and steps.read_text() and int(steps.read_text()) >= kill_at):
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


# ------------------------------------------------------------------------------- config values, before any data work
CONFIG_CASES = [
    ("data.batch_size=abc", "data.batch_size: expected int, got 'abc' (str)"),
    ("data.batch_size=3.5", "data.batch_size: expected int, got 3.5 (float)"),
    ("data.eval_batch_size=null", "data.eval_batch_size: expected int, got None (NoneType)"),
    ("data.history_len=ten", "data.history_len: expected int, got 'ten' (str)"),
    ("data.max_length=[1,2]", "data.max_length: expected int, got [1, 2] (ListConfig)"),
    ("data.cache=maybe", "data.cache: expected bool, got 'maybe' (str)"),
    ("data.implicit=yes", "data.implicit: expected bool, got 'yes' (str)"),
    ("data.split_ratios=0.8", "data.split_ratios: expected collections.abc.Sequence[float], got 0.8 (float)"),
    ("data.label_threshold=x", "data.label_threshold: expected float, got 'x' (str)"),
    ("data.k_core=abc", "data.k_core: expected int, got 'abc' (str)"),
    ("data.vocab_size=big", "data.vocab_size: expected int, got 'big' (str)"),
    ("data.split_seed=x", "data.split_seed: expected int, got 'x' (str)"),
    ("data.num_workers=-", "data.num_workers: expected int, got '-' (str)"),
    ("+data.foo=1", "data.foo: not a parameter of BehaviourLogDataModule; parameters: ['data_dir', "),
    ("+trainer.foo=1", "trainer.foo: not a parameter of Trainer; parameters: ['accelerator', "),
    ("+task.foo=1", "task.foo: not a parameter of CTRSystem; parameters: ['backbone', "),
    ("+model.backbone.foo=1", "model.backbone.foo: not a parameter of build_backbone; parameters: ['vocab_size', "),
    ("trainer.max_epochs=abc", "trainer.max_epochs: expected Optional[int], got 'abc' (str)"),
    ("trainer.gradient_clip_val=high", "trainer.gradient_clip_val: expected Union[int, float, NoneType], got 'high'"),
    ("trainer.precision=33", "trainer.precision: expected Union[Literal[64, 32, 16], "),
    ("trainer.accelerator=5", "trainer.accelerator: expected Union[str, lightning.pytorch.accelerators."),
    ("task.optimizer.lr=abc", "task.optimizer.lr: expected float | torch.Tensor, got 'abc' (str)"),
    ("callbacks.early_stopping.patience=abc", "callbacks.early_stopping.patience: expected int, got 'abc' (str)"),
    ("callbacks.model_checkpoint.save_top_k=one", "callbacks.model_checkpoint.save_top_k: expected int, got 'one'"),
    ("callbacks.step_checkpoint.every_n_train_steps=often",
     "callbacks.step_checkpoint.every_n_train_steps: expected Optional[int], got 'often' (str)"),
    ("model.backbone.path=/nonexistent", "model.backbone.path: folder not found: /nonexistent"),
    ("model.backbone.path=./no/such/folder", "model.backbone.path: folder not found: ./no/such/folder"),
    ("model=hf model.source=/nonexistent", "model.source: folder not found: /nonexistent"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_config_value_is_one_line_naming_the_key_before_any_data_work(
    override: str, message: str, tmp_path: Path, ml100k_dir: Path
):
    cfg = _cfg(tmp_path, ml100k_dir, *override.split())
    with pytest.raises(ConfigError) as info:
        run.train(cfg)
    assert one_line(info.value).startswith(f"ConfigError: {message}") and "\n" not in str(info.value)
    assert exit_code(info.value) == 2 and user_error(info.value) is info.value
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # no data work, no run files


# ------------------------------------------------------------------------------- the ML-100K loader, strict
def _ml100k(tmp_path: Path, source: Path, file: str = "u.data", line: int = 5, text: bytes | None = None,
            append: bytes = b"") -> Path:  # fmt: skip
    """A copy of the fixture with line `line` of `file` replaced by `text` (None: kept) and `append` added."""
    root = tmp_path / "ml"
    shutil.copytree(source, root)
    lines = (root / file).read_bytes().splitlines(keepends=True)
    if text is not None:
        lines[line - 1] = text
    (root / file).write_bytes(b"".join(lines) + append)
    return root


def _setup_error(root: Path, tmp_path: Path, **data: object) -> str:
    """The one-line error of preparing `root` as data (nothing may be left in the data folder's caches)."""
    dm = BehaviourLogDataModule(data_dir=str(tmp_path / "data"), root=str(root), **data)  # type: ignore[arg-type]
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        dm.setup()
    assert user_error(info.value) is info.value and exit_code(info.value) == 2
    assert not (tmp_path / "data" / "cache").exists() and not (tmp_path / "data" / "tokenizers").exists()
    assert "\n" not in str(info.value)
    return str(info.value)


DATA_CASES = [
    ("u.data", b"1\t2\t7\t881250949\n", "u.data:5: rating must be within ml-100k's scale 1-5, got 7"),
    ("u.data", b"1\t2\tinf\t881250949\n", "u.data:5: rating must be within ml-100k's scale 1-5, got inf"),
    ("u.data", b"1\t2\t0\t881250949\n", "u.data:5: rating must be within ml-100k's scale 1-5, got 0"),
    ("u.data", b"1\t2\t-3\t881250949\n", "u.data:5: column 'rating' must be a number >= 0"),
    ("u.data", b"1\t2\tgood\t881250949\n", "u.data:5: column 'rating' must be a number >= 0"),
    ("u.data", b"1\t12.7\t4\t881250949\n", "u.data:5: column 'item_id' has invalid value '12.7' (expected a"),
    ("u.data", b"1\t1e1\t4\t881250949\n", "u.data:5: column 'item_id' has invalid value '1e1'"),
    ("u.data", b"-1\t2\t4\t881250949\n", "u.data:5: column 'user_id' has invalid value '-1'"),
    ("u.data", b"1\t2\t4\t8812.5\n", "u.data:5: column 'timestamp' has invalid value '8812.5'"),
    ("u.data", b"\n", "u.data:5: column 'user_id' has invalid value ''"),  # a blank line, at its own number
    ("u.data", b"1\t2\t4\n", "u.data:5: column 'timestamp' has invalid value ''"),
    ("u.data", b"1\t999\t4\t881250949\n", "interaction row 5 references unknown item_id 999"),
    ("u.data", b"99\t2\t4\t881250949\n", "interaction row 5 references unknown user_id 99"),
    ("u.data", b"1\t2\t4\t88\xe9\n", "u.data: not valid UTF-8 at byte "),
    ("u.user", b"1|24|M|t\xe9chnician|85711\n", "u.user: not valid UTF-8 at byte "),
    ("u.user", b"1|old|M|technician|85711\n", "u.user:5: column 'age' has invalid value 'old'"),
    ("u.item", b"x|Heat (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
     "u.item:5: column 'item_id' has invalid value 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "text", "message"), DATA_CASES, ids=[f"{c[0]}:{c[1]!r}" for c in DATA_CASES])
def test_a_damaged_ml100k_file_is_one_line_naming_file_and_line(file: str, text: bytes, message: str, tmp_path: Path,
                                                                ml100k_dir: Path):  # fmt: skip
    assert message in _setup_error(_ml100k(tmp_path, ml100k_dir, file, 5, text), tmp_path)


def test_a_non_utf8_byte_is_reported_at_its_exact_byte_and_line(tmp_path: Path, ml100k_dir: Path):
    root = _ml100k(tmp_path, ml100k_dir, "u.data", 7, b"1\t2\t4\t8812\xe90949\n")
    offset = sum(len(x) for x in (root / "u.data").read_bytes().splitlines(keepends=True)[:6]) + len("1\t2\t4\t8812")
    assert f"u.data: not valid UTF-8 at byte {offset} (line 7)" in _setup_error(root, tmp_path)


def _duplicated(tmp_path: Path, ml100k_dir: Path, n: int = 50) -> Path:
    lines = (ml100k_dir / "u.data").read_bytes().splitlines(keepends=True)
    return _ml100k(tmp_path, ml100k_dir, append=b"".join(lines[:n]))  # rows 321.. repeat rows 1..


def test_duplicate_interactions_are_an_error_naming_both_lines(tmp_path: Path, ml100k_dir: Path):
    message = _setup_error(_duplicated(tmp_path, ml100k_dir), tmp_path, duplicates="error")
    assert "u.data:321: duplicate interaction (user_id " in message and "first at line 1), 50 repeated" in message


@pytest.mark.parametrize(("policy", "kept"), [("warn", 370), ("drop", 320)])
def test_duplicate_interactions_kept_with_a_warning_or_dropped(policy: str, kept: int, tmp_path: Path,
                                                               ml100k_dir: Path, caplog):  # fmt: skip
    dm = BehaviourLogDataModule(data_dir=str(tmp_path / "data"), root=str(_duplicated(tmp_path, ml100k_dir)),
                                duplicates=policy)  # fmt: skip
    with caplog.at_level("INFO", logger="m6rec.data.validate"):
        assert len(dm.tables.interactions) == kept
    assert "u.data:321: duplicate interaction" in caplog.text and f"data.duplicates={policy}" in caplog.text


def test_an_unknown_duplicates_policy_names_the_key(tmp_path: Path, ml100k_dir: Path):
    message = _setup_error(_duplicated(tmp_path, ml100k_dir), tmp_path, duplicates="ignore")
    assert message == "data.duplicates: expected one of ['error', 'warn', 'drop'], got 'ignore'"


def test_a_missing_ml100k_file_or_data_root(tmp_path: Path, ml100k_dir: Path):
    root = _ml100k(tmp_path, ml100k_dir)
    (root / "u.item").unlink()
    assert _setup_error(root, tmp_path).endswith("u.item: missing (expected an ML-100K file)")
    assert _setup_error(tmp_path / "nowhere", tmp_path) == f"data.root: {tmp_path / 'nowhere'} is not a folder"


def test_a_rating_outside_a_csv_datasets_scale(tmp_path: Path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,5.5,964981247\n")
    (root / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n3,Heat (1995),Action\n")
    message = _setup_error(root, tmp_path, dataset="ml-latest-small")
    assert message == "interaction row 2: rating must be within ml-latest-small's scale 0.5-5, got 5.5"


# ------------------------------------------------------------------------------- user error or bug; the exit code
def _instantiation_error(cause: Exception) -> Exception:
    from hydra.errors import InstantiationException

    try:
        try:
            raise cause
        except Exception as err:
            raise InstantiationException("Error in call to target 'm6rec.x':\n" + repr(err)) from err
    except InstantiationException as wrapped:
        return wrapped


def _hydra_errors() -> list[Exception]:
    from hydra.errors import ConfigCompositionException, MissingConfigException

    return [ConfigCompositionException("Could not override 'data.nope'.\nKey 'nope' is not in struct"),
            MissingConfigException("In 'config': Could not find 'experiment/nope'", "experiment/nope")]  # fmt: skip


CLASSIFY_CASES = [
    (ValueError("data.k_core: no interactions left"), True),
    (ValueError("/x/ratings.csv:5: expected 4 fields, saw 5"), True),
    (ValueError("Toys.jsonl.gz: no reviews"), True),
    (FileNotFoundError(2, "No such file or directory", "/x/u.item"), True),
    (ConfigError("data.batch_size: expected int"), True),
    (_instantiation_error(ValueError("data.root: /x is not a folder")), True),
    (ValueError("invalid literal for int() with base 10: 'abc'"), False),  # a bug's ValueError keeps its traceback
    (ValueError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), False),
    (KeyError("user_id"), False),
    (RuntimeError("CUDA error: device-side assert triggered"), False),
    (_instantiation_error(TypeError("__init__() got an unexpected keyword argument 'x'")), False),
    *((err, True) for err in _hydra_errors()),
]  # fmt: skip


@pytest.mark.parametrize(("err", "is_user_error"), CLASSIFY_CASES, ids=[repr(c[0])[:60] for c in CLASSIFY_CASES])
def test_user_errors_are_told_from_bugs(err: Exception, is_user_error: bool):
    found = user_error(err)
    assert (found is not None) == is_user_error
    if found is not None:
        assert "\n" not in one_line(found) and exit_code(found) == 2


def _raise(err: BaseException):
    def main() -> None:
        raise err

    return main


def test_run_main_prints_one_line_and_exits_2_for_a_user_error(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("M6REC_USER_HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["run.py", "data.batch_size=abc"])
    assert run_main(_raise(ConfigError("data.batch_size: expected int, got 'abc' (str)"))) == 2
    assert capsys.readouterr().err == "Error: ConfigError: data.batch_size: expected int, got 'abc' (str)\n"
    assert run_main(_raise(NonFiniteError("training loss is nan at step 3 (epoch 0)"))) == 1  # one line, exit 1
    with pytest.raises(ZeroDivisionError):  # a bug: raised on, with its traceback
        run_main(_raise(ZeroDivisionError("division by zero")))


@pytest.mark.parametrize(("env", "argv"), [({"HYDRA_FULL_ERROR": "1"}, []), ({}, ["debug=true"])])
def test_full_error_or_debug_shows_the_traceback_of_a_user_error(env: dict, argv: list[str], monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("M6REC_USER_HYDRA_FULL_ERROR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["run.py", *argv])
    with pytest.raises(ConfigError):
        run_main(_raise(ConfigError("data.batch_size: expected int")))


# ------------------------------------------------------------------------------- loading a downloaded run dir
@pytest.mark.parametrize(("key", "target"), [("data", "os.system"), ("model.backbone", "builtins.eval"),
                                             ("task.optimizer", "subprocess.Popen"), ("peft", "shutil.rmtree")])
def test_a_run_config_with_a_target_outside_the_allow_list_is_refused(key: str, target: str, tmp_path: Path):
    from omegaconf import OmegaConf

    from m6rec.recommend import RecommendError, check_targets

    cfg = compose_config(["experiment=ctr_lora"], tmp_path)
    OmegaConf.update(cfg, f"{key}._target_", target, force_add=True)
    with pytest.raises(RecommendError) as info:
        check_targets(cfg, tmp_path / "config_resolved.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'config_resolved.yaml'}: {key}._target_={target} is outside")
    check_targets(compose_config(["experiment=ctr_lora"], tmp_path), tmp_path)  # the project's own targets pass


@pytest.mark.parametrize("template", ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                                      "{{ title.__class__.__base__.__subclasses__() }}"])  # fmt: skip
def test_jinja_templates_render_in_a_sandbox(template: str):
    import jinja2.sandbox

    from m6rec.data.render import _jinja

    with pytest.raises(jinja2.sandbox.SecurityError):
        _jinja(template).render(title="Heat", cycler=jinja2.utils.Cycler)


# ------------------------------------------------------------------------------- exact resume, in-process
def test_a_run_resumed_mid_epoch_from_ckpt_path_last_matches_the_uninterrupted_run(tmp_path: Path, ml100k_dir: Path):
    runs = tmp_path / "logs" / "runs"

    def cfg(out: Path, *overrides: str):
        return compose_config([*FAST, f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "~logger",
                               "trainer.max_epochs=2", "callbacks.step_checkpoint.every_n_train_steps=3",
                               "peft.lora_dropout=0.1", *overrides], out)  # fmt: skip

    whole = run.train(cfg(tmp_path / "whole"))
    with pytest.raises(RuntimeError, match="crash at step 7"):  # mid-epoch 0 (8 steps an epoch), after step_6
        run.train(cfg(runs / "a", "+callbacks.crash._target_=tests.helpers.CrashAt", "+callbacks.crash.step=7"))
    assert sorted(p.name for p in (runs / "a" / "checkpoints").iterdir()) == ["step_0000006.ckpt"]
    resumed = run.train(cfg(runs / "b", "ckpt_path=last"))
    for key in ("val/auc", "test/auc", "test/logloss", "test/acc"):
        assert resumed[key] == whole[key], key  # bit-identical: same order, same RNG, same best epoch


@pytest.mark.slow  # two real run.py processes (~30 s)
@pytest.mark.parametrize(("override", "line"), [
    ("data.batch_size=abc", "Error: ConfigError: data.batch_size: expected int, got 'abc' (str)"),
    ("experiment=nope", "Error: MissingConfigException: In 'config': Could not find 'experiment/nope'"),
])  # fmt: skip
def test_the_command_line_prints_one_line_and_exits_2(override: str, line: str, tmp_path: Path, ml100k_dir: Path):
    proc = run_cli([*FAST, f"data.root={ml100k_dir}", override], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
    assert not list(tmp_path.glob("logs/*/runs/*/config_resolved.yaml"))  # nothing half-written
