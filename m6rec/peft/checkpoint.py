"""Adapter-only checkpoints: when weights are frozen, a checkpoint keeps only what trains (plus buffers) and the
frozen backbone's identity; loading verifies that identity and takes the frozen weights from the current model."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

IDENTITY_KEY = "frozen_backbone"  # checkpoint entry: {"config_sha256", "weights_sha256", "tensors"}
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype"}


class BackboneMismatchError(ValueError):
    """An adapter-only checkpoint (`source`) was saved for another frozen backbone than the model loading it."""

    def __init__(self, source: str, what: str):
        self.what = what
        super().__init__(
            f"{source}: saved without its frozen backbone, and this model's backbone differs ({what}); "
            "build the backbone it was trained on (same model config, weights or seed) to load it"
        )


def frozen_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that do not train, by state-dict key (a tied parameter appears under each of its keys)."""
    state = module.state_dict(keep_vars=True)
    return {k: v for k, v in state.items() if isinstance(v, nn.Parameter) and not v.requires_grad}


def backbone_config(module: nn.Module) -> dict[str, Any]:
    """The first transformers config found in `module` (the backbone's), less keys that name where it came from."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if hasattr(config, "to_dict"):
            return {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    return {}


def frozen_identity(module: nn.Module, frozen: dict[str, torch.Tensor]) -> dict[str, Any]:
    """sha256 of the backbone config and of the frozen tensors' names, dtypes, shapes and bytes."""
    weights = hashlib.sha256()
    for name in sorted(frozen):
        tensor = frozen[name].detach().cpu().contiguous()
        weights.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        weights.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, not copied
    config = json.dumps(backbone_config(module), sort_keys=True, default=str).encode()
    return {
        "config_sha256": hashlib.sha256(config).hexdigest(),
        "weights_sha256": weights.hexdigest(),
        "tensors": len(frozen),
    }


def drop_frozen(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Remove the frozen parameters from `checkpoint["state_dict"]` and record their identity (no-op if none)."""
    frozen = frozen_parameters(module)
    if not frozen:
        return
    state = checkpoint["state_dict"]
    for name in frozen:
        state.pop(name, None)
    checkpoint[IDENTITY_KEY] = frozen_identity(module, frozen)


def restore_frozen(module: nn.Module, checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
    """Verify that `module`'s frozen weights are the ones `checkpoint` was saved with, then put them back into
    `checkpoint["state_dict"]` so a strict `load_state_dict` works. A full checkpoint passes through unchanged."""
    saved = checkpoint.get(IDENTITY_KEY)
    if saved is None:
        return
    frozen = frozen_parameters(module)
    current = frozen_identity(module, frozen)
    if current != saved:
        what = "config" if current["config_sha256"] != saved["config_sha256"] else "frozen weights"
        raise BackboneMismatchError(source, what)
    state = checkpoint["state_dict"]
    for name, tensor in frozen.items():
        state.setdefault(name, tensor.detach())


class AdapterOnlyCheckpoints:
    """LightningModule mixin: checkpoints hold only trainable weights when part of the model is frozen (PEFT);
    full fine-tuning keeps full checkpoints. Trainer restores (test, resume) and `load_from_checkpoint` both work."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        drop_frozen(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        trainer = getattr(self, "_trainer", None)
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        restore_frozen(self, checkpoint, f"checkpoint {path}" if path else "checkpoint")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any):
        """As LightningModule.load_from_checkpoint; a backbone mismatch names the checkpoint file."""
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except BackboneMismatchError as error:
            raise BackboneMismatchError(f"checkpoint {checkpoint_path}", error.what) from None
