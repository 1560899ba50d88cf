"""Find a transformer's list of blocks generically, and freeze modules."""

from __future__ import annotations

from torch import nn


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The first nn.ModuleList of same-class modules (GPT-2 `h`, BERT `encoder.layer`, Llama `layers`) and its name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(b) for b in module}) == 1:
            return name, module
    raise ValueError(f"peft: found no list of transformer blocks (an nn.ModuleList) in {type(model).__name__}")


def freeze(module: nn.Module) -> nn.Module:
    """Stop every parameter of `module` from training; returns `module`."""
    module.requires_grad_(False)
    return module
