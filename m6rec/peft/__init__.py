"""Parameter-efficient fine-tuning: `apply_peft(backbone, method)` with `method` built from the `peft` group.

Methods: none (full fine-tuning), frozen, top_k_layers, lora, prefix, prompt, ia3 (peft configs), adapter,
option, option_adapter. A method that brings its own scoring head exposes `make_head(num_outputs)` on the module it
returns (option tuning); TextScorer uses it instead of a linear head.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

from peft import PeftConfig, PeftType, get_peft_model
from torch import nn

PEFT_NAMES = {PeftType.PREFIX_TUNING: "prefix", PeftType.PROMPT_TUNING: "prompt"}


@runtime_checkable
class PeftMethod(Protocol):
    """One of our own methods (m6rec.peft.freeze / adapter / option): adapts `backbone`, returns the module to use."""

    def apply(self, backbone: nn.Module) -> nn.Module: ...


def apply_peft(backbone: nn.Module, method: Any | None) -> nn.Module:
    """Adapt `backbone` for the chosen method: a peft config, a PeftMethod, or nothing (None / an empty `peft=none`
    config) for full fine-tuning."""
    if not method:
        return backbone
    if isinstance(method, PeftConfig):
        if method.is_prompt_learning:
            _check_prompt_learning(backbone, method)
        return get_peft_model(backbone, method)
    if isinstance(method, PeftMethod):
        return method.apply(backbone)
    raise TypeError(f"peft: expected a peft.PeftConfig, a method with .apply(backbone) or null, got {type(method)}")


def _check_prompt_learning(backbone: nn.Module, method: PeftConfig) -> None:
    name = PEFT_NAMES.get(method.peft_type, str(method.peft_type).lower())
    if method.task_type != "FEATURE_EXTRACTION":
        raise ValueError(
            f"peft.task_type: peft={name} on a base model needs FEATURE_EXTRACTION, not {method.task_type}"
        )
    takes_cache = "past_key_values" in inspect.signature(backbone.forward).parameters
    if method.peft_type == PeftType.PREFIX_TUNING and not takes_cache:
        raise ValueError(f"peft=prefix: {type(backbone).__name__} takes no past_key_values, which prefix tuning needs")


def count_parameters(module: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts (tied parameters once), and the trainable percentage."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / max(total, 1)}
