"""OmegaConf resolvers used by the configs; `register_resolvers()` runs before Hydra composes anything."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def sqlite_url(path: str) -> str:
    """`sqlite:///<absolute path>`, creating the parent folder (an Optuna study may start before any job runs)."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def sweep_group(default: str) -> str:
    """`<default>-<multirun dir name>` for the jobs of one multirun (so they share a W&B group), else `default`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{default}-{Path(HydraConfig.get().sweep.dir).name}"
    return default


def group_choice(group: str, target: str) -> str:
    """The option chosen for a config group (e.g. task → ctr). A run reproduced from its saved `.hydra/config.yaml`
    has no choices; then the module of the group's `_target_` names it (m6rec.systems.ctr.CTRSystem → ctr)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return target.rsplit(".", 2)[-2] if target.count(".") >= 2 else target


IGNORED_IN_NAMES = ("paths.", "data.root", "data.data_dir", "extras.", "hydra.", "logger")


def job_name(default: str) -> str:
    """A readable run name from the job's command-line overrides (paths and plumbing left out), else `default`."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return default
    kept = [o.lstrip("+~") for o in HydraConfig.get().overrides.task]
    kept = [o for o in kept if not o.startswith(IGNORED_IN_NAMES) and not o.startswith("experiment=")]
    return ",".join(kept) or default


def model_path(spec: str, cache_dir: str) -> str:
    """A model spec (folder, hub name, `pypi:<package>`) as a path `from_pretrained` loads (m6rec.models.pretrained)."""
    from m6rec.models.pretrained import resolve_model_path

    return resolve_model_path(spec, cache_dir)


def register_resolvers() -> None:
    resolvers = {
        "sqlite_url": sqlite_url,
        "sweep_group": sweep_group,
        "job_name": job_name,
        "choice": group_choice,
        "model_path": model_path,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
