"""Optional dependencies: a choice that needs an extra that is not installed is a one-line error naming the extra."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from m6rec import compare
from m6rec.utils import extras
from tests.helpers import ROOT

PLUGINS = {module for module, _ in extras.NEEDS.values()}


@pytest.fixture
def nothing_optional(monkeypatch):
    """Pretend no optional package (sweeper, launchers, matplotlib) is installed."""
    real = extras.importlib.util.find_spec
    hidden = PLUGINS | {"matplotlib"}
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None if name in hidden else real(name))


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("hparams_search=ctr_optuna", "hparams_search=ctr_optuna needs hydra_optuna_sweeper"),
        ("+hydra/sweeper=optuna", "+hydra/sweeper=optuna needs hydra_optuna_sweeper"),
        ("hydra/launcher=joblib", "hydra/launcher=joblib needs hydra_joblib_launcher"),
        ("hydra/launcher=submitit_local", "hydra/launcher=submitit_local needs hydra_submitit_launcher"),
        ("hydra/launcher=slurm", "hydra/launcher=slurm needs hydra_submitit_launcher"),
    ],
)
def test_a_sweeper_or_launcher_without_its_extra_names_the_pip_install(nothing_optional, arg: str, message: str):
    extra = "sweep" if "optuna" in message else "launchers"
    with pytest.raises(extras.MissingExtra) as err:
        extras.check_overrides(["-m", "experiment=ctr_lora", arg, "seed=0,1"])
    assert str(err.value) == f"{message}, which is not installed: pip install 'm6rec[{extra}]'"


def test_the_core_choices_need_no_extra(nothing_optional):
    extras.check_overrides(["-m", "experiment=ctr_lora", "hydra/launcher=basic", "hydra/sweeper=basic", "peft=none"])


def test_installed_extras_pass(monkeypatch):
    monkeypatch.setitem(extras.NEEDS, ("hydra/launcher", "joblib"), ("json", "launchers"))  # any importable module
    extras.check_overrides(["hydra/launcher=joblib"])


def test_run_py_exits_with_one_line_before_hydra_starts(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setitem(extras.NEEDS, ("hparams_search", None), ("no_such_sweeper_plugin", "sweep"))
    monkeypatch.setattr(sys, "argv", ["run.py", "-m", "hparams_search=ctr_optuna", f"paths.log_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    missing = "needs no_such_sweeper_plugin, which is not installed: pip install 'm6rec[sweep]'"
    assert exc.value.code == 2  # a user error (m6rec.utils.errors)
    assert capsys.readouterr().err.strip() == f"Error: run.py: hparams_search=ctr_optuna {missing}"
    assert not any(tmp_path.iterdir())  # nothing ran


def test_compare_without_matplotlib_writes_the_table_and_names_the_extra(nothing_optional, tmp_path: Path, capsys):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "metrics.json").write_text('{"test/auc": 0.75}')
    assert compare.main([str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip()
    missing = "needs matplotlib, which is not installed: pip install 'm6rec[plot]'"
    assert err == f"python -m m6rec.compare: comparison.png {missing}"
    assert "| all | 1 | 0.7500 ± — | 0.7500 |" in (tmp_path / "comparison.md").read_text()
    assert not (tmp_path / "comparison.png").exists()
