"""ZeroShotSystem: score each event by a causal LM's length-normalised log-likelihood of its candidate text.

No training: the score of a prompt "… Will he enjoy <candidate>?" is the mean log p(token | everything before it)
over the candidate's tokens only; AUC / GAUC against label = rating >= threshold (the CTR protocol, e.g. on the
`cold_items` split, whose test items never occur in training).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAUROC
from transformers import PreTrainedModel

from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import prompt_segments, render_item_text
from m6rec.metrics.gauc import GroupAUROC
from m6rec.systems.base import TaskSystem


def candidate_token_lengths(datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item id: how many tokens its candidate text takes in a prompt, and how many follow it (the template's
    closing literal plus the tokenizer's end tokens). The candidate must be the prompt's last field."""
    t = datamodule.templates
    probe = prompt_segments("\x01", "\x02", ["\x03"], "\x04", t)  # a placeholder for each field
    where = [k for k, segment in enumerate(probe) if "\x04" in segment]
    from_end = len(probe) - where[0] if len(where) == 1 else 0  # 1: the prompt ends with it, 2: a literal follows
    if from_end not in (1, 2):
        raise ValueError("data.templates.prompt: zero-shot scoring needs {candidate} once, as the last field")
    encoder = SegmentEncoder(datamodule.tokenizer, t, datamodule.hparams.max_length)
    items = datamodule.tables.items.to_dict("records")
    size = max(int(row["item_id"]) for row in items) + 1
    candidate, tail = torch.zeros(size, dtype=torch.long), torch.zeros(size, dtype=torch.long)
    for row in items:
        segments = prompt_segments("\x01", "\x02", ["\x03"], render_item_text(row, t), t)
        candidate[row["item_id"]] = len(encoder.ids(segments[-from_end]))
        closing = segments[len(segments) - from_end + 1 :]
        tail[row["item_id"]] = sum(len(encoder.ids(s)) for s in closing) + len(encoder.suffix)
    return candidate, tail


def candidate_log_likelihood(
    lm: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """Mean log-probability of tokens [start, end) of each right-padded row given the tokens before them.

    The LM head is applied only at the positions that predict those tokens (base model → output embeddings), so
    memory is O(batch × candidate length × vocabulary), not O(batch × prompt length × vocabulary).
    """
    if bool((start < 1).any()) or bool((end <= start).any()):
        raise ValueError("zero-shot: a candidate must follow at least one token and have one token")
    hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    width = int((end - start).max())
    offsets = torch.arange(width, device=input_ids.device)
    targets_at = (start[:, None] + offsets).clamp_max(input_ids.size(1) - 1)  # positions of the scored tokens
    inside = offsets < (end - start)[:, None]
    rows = torch.arange(len(input_ids), device=input_ids.device)[:, None]
    logits = lm.get_output_embeddings()(hidden[rows, targets_at - 1]).float()  # position p - 1 predicts token p
    token_log_probs = logits.log_softmax(-1).gather(-1, input_ids[rows, targets_at][..., None]).squeeze(-1)
    return torch.where(inside, token_log_probs, 0.0).sum(1) / inside.sum(1)


class ZeroShotSystem(TaskSystem):
    """Evaluation only (no training_step: run with train=false). `lm` is a causal LM or a factory called with
    `vocab_size` (the size of `backbone`'s input embeddings); `backbone` itself is not used."""

    def __init__(
        self,
        backbone: nn.Module | None = None,
        lm: PreTrainedModel | Callable[..., PreTrainedModel] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["backbone", "lm", "optimizer", "scheduler"], logger=False)
        if lm is None:
            raise ValueError("task.lm: required (a causal LM, or a factory for one, e.g. backbone.build_lm)")
        if not isinstance(lm, nn.Module):
            if backbone is None:
                raise ValueError("task.lm: a factory needs the backbone to size its vocabulary")
            lm = lm(vocab_size=backbone.get_input_embeddings().num_embeddings)
        self.model = lm
        self.metrics = nn.ModuleDict(
            {
                stage: MetricCollection(
                    {"auc": BinaryAUROC(), "gauc": GroupAUROC(), "loglik": MeanMetric()},
                    prefix=f"{stage}/",
                    compute_groups=False,
                )
                for stage in ("val", "test")
            }
        )
        self.candidate_lengths: torch.Tensor | None = None  # per item id, from the datamodule at evaluation start
        self.tail_lengths: torch.Tensor | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Length-normalised log-likelihood of each row's candidate."""
        if self.candidate_lengths is None or self.tail_lengths is None:
            raise RuntimeError("ZeroShotSystem: set_candidate_lengths() has not run")
        items = batch["item_ids"]
        end = batch["attention_mask"].sum(1) - self.tail_lengths.to(items.device)[items]
        start = end - self.candidate_lengths.to(items.device)[items]
        return candidate_log_likelihood(self.model, batch["input_ids"], batch["attention_mask"], start, end)

    def set_candidate_lengths(self, datamodule) -> None:
        self.candidate_lengths, self.tail_lengths = candidate_token_lengths(datamodule)

    def on_evaluation_start(self, datamodule) -> None:
        self.set_candidate_lengths(datamodule)

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        log_likelihood = self(batch)
        score = log_likelihood.exp()  # monotone, in (0, 1]: torchmetrics would squash scores outside [0, 1]
        labels, metrics = batch["labels"].long(), self.metrics[stage]
        metrics["auc"].update(score, labels)
        metrics["gauc"].update(score, labels, indexes=batch["user_ids"])
        metrics["loglik"].update(log_likelihood)
        return {"label": batch["labels"], "score": score}
