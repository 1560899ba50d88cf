"""OmegaConf resolvers used by the configs; `register_resolvers()` runs before Hydra composes anything."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def sqlite_url(path: str) -> str:
    """`sqlite:///<absolute path>`, creating the parent folder (an Optuna study may start before any job runs)."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sqlite_url"):
        OmegaConf.register_new_resolver("sqlite_url", sqlite_url)
