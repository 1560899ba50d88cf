"""Bad input a hostile user throws at a run: config values, missing folders, damaged data files, foreign run configs
and templates; user errors told from bugs (running-job faults: tests/test_faults_runs.py). Each case asserts the
error class, its one line (naming the key, file or line), the exit code, and that nothing half-written is left."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import run
from m6rec.data import BehaviourLogDataModule
from m6rec.systems.guards import NonFiniteError
from m6rec.utils.errors import ConfigError, exit_code, one_line, run_main, user_error
from tests.helpers import compose_config, fault_config

pytestmark = pytest.mark.usefixtures("one_thread")


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
    ("seed=abc", "seed: expected int, got 'abc' (str)"),
    ("train=maybe", "train: expected bool, got 'maybe' (str)"),
    ("optimized_mode=up", "optimized_mode: expected Literal['max', 'min'], got 'up' (str)"),
    ("peft.r=abc", "peft.r: expected int, got 'abc' (str)"),
    ("peft.lora_alpha=x", "peft.lora_alpha: expected int, got 'x' (str)"),
    ("data.num_workers=-", "data.num_workers: expected int, got '-' (str)"),
    ("+data.foo=1", "data.foo: not a parameter of BehaviourLogDataModule; parameters: ['data_dir', "),
    ("+trainer.foo=1", "trainer.foo: not a parameter of Trainer; parameters: ['accelerator', "),
    ("+task.foo=1", "task.foo: not a parameter of CTRSystem; parameters: ['backbone', "),
    ("+model.backbone.foo=1", "model.backbone.foo: not a parameter of build_backbone; parameters: ['vocab_size', "),
    ("trainer.max_epochs=abc", "trainer.max_epochs: expected Optional[int], got 'abc' (str)"),
    ("trainer.gradient_clip_val=high", "trainer.gradient_clip_val: expected Union["),  # member order: typing's cache
    ("trainer.precision=33", "trainer.precision: expected Union[Literal[64, 32, 16], "),
    ("trainer.accelerator=5", "trainer.accelerator: expected Union[str, lightning.pytorch.accelerators."),
    ("task.optimizer.lr=abc", "task.optimizer.lr: expected float | torch.Tensor, got 'abc' (str)"),
    ("task.scheduler.num_warmup_steps=abc", "task.scheduler.num_warmup_steps: expected int, got 'abc' (str)"),
    ("task.scheduler.num_warmup_steps=1.5", "task.scheduler.num_warmup_steps: expected int, got 1.5 (float)"),
    ("+task.scheduler.foo=1", "task.scheduler.foo: not a parameter of get_linear_schedule_with_warmup; parameters: "),
    (
        "task.scheduler._target_=transformers.get_cosine_schedule_with_warmup +task.scheduler.num_cycles=many",
        "task.scheduler.num_cycles: expected float, got 'many' (str)",
    ),
    ("callbacks.early_stopping.patience=abc", "callbacks.early_stopping.patience: expected int, got 'abc' (str)"),
    ("callbacks.model_checkpoint.save_top_k=one", "callbacks.model_checkpoint.save_top_k: expected int, got 'one'"),
    (
        "callbacks.step_checkpoint.every_n_train_steps=often",
        "callbacks.step_checkpoint.every_n_train_steps: expected Optional[int], got 'often' (str)",
    ),
    ("model.backbone.path=/nonexistent", "model.backbone.path: folder not found: /nonexistent"),
    ("model.backbone.path=./no/such/folder", "model.backbone.path: folder not found: ./no/such/folder"),
    ("model=hf model.source=/nonexistent", "model.source: folder not found: /nonexistent"),
    (  # late interaction on a data config without segment batches
        "task.layers_online=1",
        "task.layers_online=1: late interaction needs segment batches, but data is BehaviourLogDataModule: use ",
    ),
]


@pytest.mark.parametrize(("override", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_config_value_is_one_line_naming_the_key_before_any_data_work(
    override: str, message: str, tmp_path: Path, ml100k_dir: Path
):
    cfg = fault_config(tmp_path, ml100k_dir, *override.split())
    with pytest.raises(ConfigError) as info:
        run.train(cfg)
    assert one_line(info.value).startswith(f"ConfigError: {message}") and "\n" not in str(info.value)
    assert exit_code(info.value) == 2 and user_error(info.value) is info.value
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # no data work, no run files


# ------------------------------------------------------------------------------- the ML-100K loader, strict
def _ml100k(
    tmp_path: Path, source: Path, file: str = "u.data", line: int = 5, text: bytes | None = None, append: bytes = b""
) -> Path:
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
    (
        "u.item",
        b"x|Heat (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
        "u.item:5: column 'item_id' has invalid value 'x'",
    ),
]


@pytest.mark.parametrize(("file", "text", "message"), DATA_CASES, ids=[f"{c[0]}:{c[1]!r}" for c in DATA_CASES])
def test_a_damaged_ml100k_file_is_one_line_naming_file_and_line(
    file: str, text: bytes, message: str, tmp_path: Path, ml100k_dir: Path
):
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
def test_duplicate_interactions_kept_with_a_warning_or_dropped(
    policy: str, kept: int, tmp_path: Path, ml100k_dir: Path, caplog
):
    dm = BehaviourLogDataModule(
        data_dir=str(tmp_path / "data"), root=str(_duplicated(tmp_path, ml100k_dir)), duplicates=policy
    )
    with caplog.at_level("INFO", logger="m6rec.data.sources.validate"):
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

    return [
        ConfigCompositionException("Could not override 'data.nope'.\nKey 'nope' is not in struct"),
        MissingConfigException("In 'config': Could not find 'experiment/nope'", "experiment/nope"),
    ]


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
]


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
@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("data", "os.system"),
        ("model.backbone", "builtins.eval"),
        ("task.optimizer", "subprocess.Popen"),
        ("peft", "shutil.rmtree"),
    ],
)
def test_a_run_config_with_a_target_outside_the_allow_list_is_refused(key: str, target: str, tmp_path: Path):
    from omegaconf import OmegaConf

    from m6rec.recommend import RecommendError, check_targets

    cfg = compose_config(["experiment=ctr_lora"], tmp_path)
    OmegaConf.update(cfg, f"{key}._target_", target, force_add=True)
    with pytest.raises(RecommendError) as info:
        check_targets(cfg, tmp_path / "config_resolved.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'config_resolved.yaml'}: {key}._target_={target} is outside")
    check_targets(compose_config(["experiment=ctr_lora"], tmp_path), tmp_path)  # the project's own targets pass


class ForeignTargetReached(Exception):
    """Raised by `foreign_target`: proof that a `_target_` outside the allow-list was instantiated."""


def foreign_target(**kwargs: object) -> None:
    raise ForeignTargetReached


def test_trust_run_config_lifts_the_allow_list(tmp_path: Path):
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from m6rec.recommend import RecommendError, load_run

    cfg = compose_config(["experiment=ctr_lora"], tmp_path / "run")
    OmegaConf.update(cfg, "data._target_", "tests.test_faults.foreign_target")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").touch()
    OmegaConf.save(cfg, tmp_path / "run" / "config_resolved.yaml")
    with pytest.raises(RecommendError, match="data._target_=tests.test_faults.foreign_target is outside the allow"):
        load_run(tmp_path / "run")
    with pytest.raises(InstantiationException) as info:  # --trust-run-config: the run's own target is called
        load_run(tmp_path / "run", trust_config=True)
    assert isinstance(info.value.__cause__, ForeignTargetReached)


class _TouchOnUnpickle:
    """Unpickling it runs `Path.touch(marker)`: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_when_unpickled_is_refused(tmp_path: Path, ml100k_dir: Path):
    import pickle

    import torch
    from omegaconf import OmegaConf

    from m6rec.recommend import load_run

    cfg = fault_config(tmp_path, ml100k_dir)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, tmp_path / "run" / "config_resolved.yaml")
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": _TouchOnUnpickle(marker)}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_run(tmp_path / "run")
    assert not marker.exists()


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ title.__class__.__base__.__subclasses__() }}",
    ],
)
def test_jinja_templates_render_in_a_sandbox(template: str):
    import jinja2.sandbox

    from m6rec.data.text.render import Templates, render_item_text, render_template

    with pytest.raises(jinja2.sandbox.SecurityError):
        render_template(template, {"title": "Heat", "cycler": jinja2.utils.Cycler})
    with pytest.raises(jinja2.sandbox.SecurityError):  # as a configured `data.templates.candidate` renders it
        render_item_text({"title": "Heat", "cycler": jinja2.utils.Cycler}, Templates(candidate=template))
    assert render_template("{{ title | upper }} ({{ year }})", {"title": "Heat", "year": 1995}) == "HEAT (1995)"
