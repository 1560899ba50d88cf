"""What a run directory records about itself: resolved config, code version, package versions, metrics."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from m6rec.utils.files import write_json_atomic, write_text_atomic

PACKAGES = ("m6rec", "torch", "lightning", "transformers", "peft", "torchmetrics", "hydra-core", "wandb", "tokenizers")


def git_state(repo: Path) -> dict[str, Any]:
    """Commit sha and whether the working tree had uncommitted changes (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": sha, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_start(cfg: DictConfig, output_dir: Path, repo: Path) -> None:
    write_text_atomic(output_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json_atomic(output_dir / "environment.json", {"git": git_state(repo), "packages": package_versions()})


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> Path:
    path = output_dir / "metrics.json"
    write_json_atomic(path, metrics)
    return path


def best_checkpoint(run_dir: Path, last_ok: bool = False) -> Path | None:
    """The checkpoint a finished run chose (metrics.json `best_checkpoint`; a copied run dir: the same file name under
    its own checkpoints/), else `checkpoints/last.ckpt` if `last_ok`; None when there is none (callers say why)."""
    metrics = run_dir / "metrics.json"
    best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
    candidates = [Path(best), run_dir / "checkpoints" / Path(best).name] if best else []
    candidates += [run_dir / "checkpoints" / "last.ckpt"] if last_ok else []
    return next((path for path in candidates if path.is_file()), None)
