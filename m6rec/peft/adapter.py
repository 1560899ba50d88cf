"""Houlsby-style bottleneck adapters (Houlsby et al., 2019) inserted after named submodules of every block."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from m6rec.peft.blocks import freeze, transformer_blocks

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    """x + up(act(down(x))); `up` starts at zero, so a fresh adapter is the identity (bit-exactly)."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"peft.activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.down = nn.Linear(dim, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class WithAdapter(nn.Module):
    """`base` (a projection returning one tensor) followed by `adapter`."""

    def __init__(self, base: nn.Module, adapter: nn.Module):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.adapter(self.base(*args, **kwargs))


def output_width(module: nn.Module) -> int:
    """Output features of a linear map: nn.Linear `out_features`, GPT-2 Conv1D `nf`."""
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)
    if not isinstance(width, int):
        raise ValueError(f"peft.after: {type(module).__name__} is not a linear map (no out_features / nf)")
    return width


def add_adapters(backbone: nn.Module, after: list[str], bottleneck: int, activation: str = "gelu") -> int:
    """Wrap, in every transformer block, each submodule named in `after` (names relative to the block, e.g. GPT-2
    `attn.c_proj`, BERT `output.dense`) with a fresh adapter; returns how many were inserted."""
    if not after:
        raise ValueError("peft.after: name at least one submodule of a transformer block (e.g. mlp.c_proj)")
    _, blocks = transformer_blocks(backbone)
    for block in blocks:
        for name in after:
            parent_name, _, child = name.rpartition(".")
            try:
                parent = block.get_submodule(parent_name)
                base = parent.get_submodule(child)
            except AttributeError:
                raise ValueError(f"peft.after: {type(block).__name__} has no submodule {name!r}") from None
            if isinstance(base, WithAdapter):
                raise ValueError(f"peft.after: {name!r} is listed twice")
            setattr(parent, child, WithAdapter(base, BottleneckAdapter(output_width(base), bottleneck, activation)))
    return len(blocks) * len(after)


@dataclass
class Adapters:
    """Frozen backbone + a bottleneck adapter after each `after` submodule of every block (`model.adapter_after`)."""

    after: list[str] = field(default_factory=list)
    bottleneck: int = 16
    activation: str = "gelu"

    def apply(self, backbone: nn.Module) -> nn.Module:
        freeze(backbone)
        add_adapters(backbone, list(self.after), self.bottleneck, self.activation)
        return backbone
