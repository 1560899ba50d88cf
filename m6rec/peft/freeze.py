"""Baselines without new weights: `frozen` (train the head only) and `top_k_layers` (train the top k blocks)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from m6rec.peft.blocks import freeze, transformer_blocks


@dataclass
class Frozen:
    """Freeze the whole backbone: only the scorer's head trains (a linear probe of the pooled hidden state)."""

    def apply(self, backbone: nn.Module) -> nn.Module:
        return freeze(backbone)


@dataclass
class TopKLayers:
    """Train only the top `k` transformer blocks; embeddings, lower blocks and the final norm stay frozen."""

    k: int = 1

    def apply(self, backbone: nn.Module) -> nn.Module:
        name, blocks = transformer_blocks(backbone)
        if not 0 <= self.k <= len(blocks):
            raise ValueError(f"peft.k: expected 0..{len(blocks)} ({type(backbone).__name__}.{name}), got {self.k}")
        freeze(backbone)
        for block in blocks[len(blocks) - self.k :]:
            block.requires_grad_(True)
        return backbone
