"""Option tuning (M6-Rec, Cui et al. 2022, §3.3 "Option tuning"), optionally with FFN adapters (option_adapter).

Prompt tuning prepends `n_prompt` learnable embeddings to the input of a frozen backbone. Option tuning also drops the
separate classifier: the LAST `num_options` (C) soft prompts are the C option embeddings e_c and double as the
classifier weights, logit_c = <h_pool, e_c> + b_c, with h_pool the scorer's pooled hidden state. For binary CTR
(C = 2: yes, no) the score is logit_yes - logit_no, so binary cross-entropy applies unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from m6rec.peft.adapter import Adapters
from m6rec.peft.blocks import freeze


class OptionTuned(nn.Module):
    """A frozen backbone that reads [n_prompt soft prompts; tokens]; its output keeps the prompt positions in front
    (as peft's prompt tuning does), and `make_head` gives the scorer a head that reuses the option embeddings."""

    def __init__(self, backbone: nn.Module, n_prompt: int, num_options: int):
        super().__init__()
        if not 1 <= num_options <= n_prompt:
            raise ValueError(f"peft.num_options: expected 1..n_prompt ({n_prompt}), got {num_options}")
        embeddings = backbone.get_input_embeddings()
        if embeddings.embedding_dim != backbone.config.hidden_size:
            raise ValueError(
                f"peft=option: {type(backbone).__name__} embeds tokens in {embeddings.embedding_dim} "
                f"dims, not its hidden size {backbone.config.hidden_size}"
            )
        self.backbone = backbone
        self.num_options = num_options
        rows = torch.randint(0, embeddings.num_embeddings, (n_prompt,))  # sampled-vocabulary init (Lester et al.)
        self.prompt = nn.Parameter(embeddings.weight[rows].detach().clone().float())

    @property
    def config(self):
        return self.backbone.config

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    @property
    def options(self) -> torch.Tensor:
        """The C option embeddings (the last C soft prompts), shape (C, hidden)."""
        return self.prompt[-self.num_options :]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        batch, n_prompt = input_ids.size(0), self.prompt.size(0)
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit is not None and n_prompt + input_ids.size(1) > limit:
            raise ValueError(
                f"peft.n_prompt={n_prompt} + {input_ids.size(1)} tokens exceeds the backbone's "
                f"{limit} positions: lower peft.n_prompt or data.max_length"
            )
        embeds = self.backbone.get_input_embeddings()(input_ids)
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        mask = torch.cat([attention_mask.new_ones(batch, n_prompt), attention_mask], dim=1)
        return self.backbone(inputs_embeds=torch.cat([prompt, embeds], dim=1), attention_mask=mask, **kwargs)

    def make_head(self, num_outputs: int) -> OptionHead:
        return OptionHead(self, num_outputs)


class OptionHead(nn.Module):
    """logit_c = <h_pool, e_c> + b_c over the C option embeddings; with one output (binary), logit_0 - logit_1."""

    def __init__(self, tuned: OptionTuned, num_outputs: int):
        super().__init__()
        if num_outputs == 1 and tuned.num_options != 2:
            raise ValueError(f"peft.num_options: a binary score needs 2 options (yes, no), got {tuned.num_options}")
        if num_outputs not in (1, tuned.num_options):
            raise ValueError(f"peft.num_options: the task wants {num_outputs} scores, got {tuned.num_options}")
        self.num_outputs = num_outputs
        self.num_options = tuned.num_options
        self.prompt = tuned.prompt  # shared (tied) with the backbone wrapper, like an LM head tied to the embeddings
        self.bias = nn.Parameter(torch.zeros(tuned.num_options))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        options = self.prompt[-self.num_options :].to(pooled.dtype)
        logits = pooled @ options.T + self.bias
        return logits if self.num_outputs > 1 else logits[:, :1] - logits[:, 1:]


@dataclass
class OptionTuning:
    """`peft=option`: option tuning of a frozen backbone; `adapters` adds FFN adapters (`peft=option_adapter`)."""

    n_prompt: int = 16
    num_options: int = 2
    adapters: Adapters | None = None

    def apply(self, backbone: nn.Module) -> nn.Module:
        freeze(backbone)
        if self.adapters is not None:
            self.adapters.apply(backbone)
        return OptionTuned(backbone, self.n_prompt, self.num_options)
