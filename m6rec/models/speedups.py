"""Run options that trade memory or compile time for speed: gradient checkpointing of an HF backbone, torch.compile."""

from __future__ import annotations

from torch import nn


def enable_gradient_checkpointing(backbone: nn.Module, enabled: bool) -> nn.Module:
    """`backbone` with HF activation (gradient) checkpointing switched on when `enabled` (activations recomputed in
    backward, non-reentrant, so frozen-base PEFT needs no input grads); a clear error if its architecture lacks it."""
    if not enabled:
        return backbone
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ValueError(f"model.gradient_checkpointing=true: {type(backbone).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name is deprecated
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return backbone


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """`model` compiled in place with torch.compile when `enabled` (nn.Module.compile: its state_dict keys, hence
    checkpoints, stay those of the plain module)."""
    if enabled:
        model.compile()
    return model
