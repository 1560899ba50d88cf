"""Optional dependencies (pyproject's extras): a one-line error naming the `pip install` that adds a missing one."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

# a Hydra override "<group>=<choice>" (choice None: any) -> (the module it needs, the extra that installs it)
NEEDS: dict[tuple[str, str | None], tuple[str, str]] = {
    ("hparams_search", None): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "launchers"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "launchers"),
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, what: str) -> None:
    """Raise MissingExtra ("<what> needs <module>: pip install 'm6rec[<extra>]'") unless `module` is importable."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        found = False
    if not found:
        name = module.split(".")[-1]
        raise MissingExtra(f"{what} needs {name}, which is not installed: pip install 'm6rec[{extra}]'")


def check_overrides(args: Iterable[str]) -> None:
    """Raise MissingExtra for the first command-line override that selects a sweeper or launcher not installed."""
    for arg in args:
        key, sep, choice = arg.lstrip("+~").partition("=")
        if not sep:
            continue
        for (group, wanted), (module, extra) in NEEDS.items():
            if key == group and (wanted is None or choice == wanted):
                require(module, extra, arg)
