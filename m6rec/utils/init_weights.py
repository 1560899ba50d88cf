"""Start a new run's system from another run's weights (UniSRec's stage two, a pretrained part reused elsewhere).

Unlike `ckpt_path` (resume: same model, optimizer and epoch), only the weights move: the new run starts at epoch 0
with a fresh optimizer, and its model may differ (tensors it lacks are skipped, tensors the source lacks keep their
initialisation). `init_weights.rename` maps key prefixes of the source onto this model's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from m6rec.utils.errors import ConfigError
from m6rec.utils.run_record import best_checkpoint

log = logging.getLogger(__name__)


def source_checkpoint(path: str | Path) -> Path:
    """A `.ckpt` file as given, or a finished run directory's chosen checkpoint (else its last.ckpt)."""
    path = Path(path)
    found = best_checkpoint(path, last_ok=True) if path.is_dir() else (path if path.is_file() else None)
    if found is None:
        raise ConfigError(f"init_weights.path: {path} is neither a checkpoint file nor a run directory with one")
    return found


def initial_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint a training run starts from (`init_weights.path`), None without one or with `train=false`;
    an experiment that needs one says `init_weights.required: true` (OmegaConf's `???` does not override a null)."""
    init = cfg.get("init_weights")
    if not cfg.get("train", True) or init is None:
        return None
    if init.get("required") and not init.get("path"):
        raise ConfigError("init_weights.path: this experiment starts from another run: give its directory or a .ckpt")
    return source_checkpoint(init.path) if init.path else None


def renamed(key: str, rename: dict[str, str]) -> str:
    """`key` with the first matching prefix of `rename` (old → new) replaced."""
    for old, new in rename.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def load_initial_weights(system: nn.Module, path: str | Path, rename: dict[str, str] | None = None) -> list[str]:
    """Copy every tensor of the source checkpoint whose (renamed) key this system has into it; return those keys.
    A key in both with different shapes, or no key in common, is a `ConfigError`."""
    ckpt = source_checkpoint(path)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    own, rename = system.state_dict(), dict(rename or {})
    taken = {}
    for key, value in state.items():
        key = renamed(key, rename)
        if key not in own:
            continue
        if own[key].shape != value.shape:
            shapes = f"{tuple(value.shape)} in the source, {tuple(own[key].shape)} here"
            raise ConfigError(f"init_weights.path: {ckpt}: {key} has shape {shapes}")
        taken[key] = value
    if not taken:
        raise ConfigError(f"init_weights.path: {ckpt} shares no weight with this model (see init_weights.rename)")
    system.load_state_dict(taken, strict=False)
    kept = sorted(set(own) - set(taken))
    log.info(
        "Initialised %d of %d tensors from %s; kept their own initialisation: %s", len(taken), len(own), ckpt, kept
    )
    return sorted(taken)
