"""TextScorer: a backbone reads a prompt, one pooled hidden state goes through a head to a score."""

from __future__ import annotations

import torch
from torch import nn


class TextScorer(nn.Module):
    """Score a batch of (right-padded) prompts: `pooling="last"` for decoders, `"first"` for [CLS] encoders.

    The head is a linear map unless the backbone brings its own (`backbone.make_head(num_outputs)`, option tuning).
    Positions a prompt method prepends to the hidden states (prompt / option tuning) are dropped before pooling.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, num_outputs: int = 1, pooling: str = "last"):
        super().__init__()
        if pooling not in ("last", "first", "mean"):
            raise ValueError(f"task.pooling: expected last|first|mean, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        make_head = getattr(backbone, "make_head", None)
        self.head = make_head(num_outputs) if callable(make_head) else nn.Linear(hidden_size, num_outputs)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "first":
            return hidden[:, 0]
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        last = attention_mask.sum(1) - 1  # index of the last real token under right padding
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden[:, hidden.size(1) - input_ids.size(1) :]  # drop virtual tokens prepended in front
        return self.head(self.pool(hidden, attention_mask)).squeeze(-1)
