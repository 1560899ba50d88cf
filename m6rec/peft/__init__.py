"""Parameter-efficient fine-tuning: `apply_peft(backbone, method)` with `method` built from the `peft` group."""

from __future__ import annotations

from typing import Any

from peft import PeftConfig, get_peft_model
from torch import nn


def apply_peft(backbone: nn.Module, method: Any | None) -> nn.Module:
    """Wrap `backbone` for the chosen method: a peft config (LoRA, …), or nothing (None / an empty `peft=none`
    config) for full fine-tuning."""
    if not method:
        return backbone
    if isinstance(method, PeftConfig):
        return get_peft_model(backbone, method)
    raise TypeError(f"peft: expected a peft.PeftConfig or null, got {type(method).__name__}")


def count_parameters(module: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts, and the trainable percentage."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / max(total, 1)}
