"""ExplainSystem: a causal LM learns to continue "… rated <item> (4/5) because" with the user's review.

Loss: token cross-entropy on the target (review + eos) only. Validation/test: `val/loss` and `val/perplexity` over
every target token, and greedy generation from the prompt alone (left-padded, eos stops) scored against the
reference with BLEU-4 (`val/bleu`) and ROUGE-L F1 (`val/rougeL`) from torchmetrics (no nltk: no stemming).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import BLEUScore, ROUGEScore
from transformers import PreTrainedModel

from m6rec.peft import apply_peft
from m6rec.systems.base import TaskSystem

IGNORE = -100  # label of a position without loss


class RougeLF1(ROUGEScore):
    """ROUGE-L F-measure alone (a tensor, so a MetricCollection logs it as `<prefix>rougeL`)."""

    def __init__(self, **kwargs: Any):
        super().__init__(rouge_keys=("rougeL",), use_stemmer=False, **kwargs)

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return super().compute()["rougeL_fmeasure"]


def causal_lm(model: nn.Module) -> PreTrainedModel:
    """The HF causal LM inside `model` (a peft wrapper's base model, with its adapters injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def target_token_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of every labelled token (1-D); the LM head runs only at the positions that predict one."""
    lm = causal_lm(model)
    hidden = lm.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE  # position p predicts token p + 1
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="none")


class ExplainSystem(TaskSystem):
    """`lm` is a causal LM or a factory called with `vocab_size` (the size of `backbone`'s input embeddings; the
    backbone itself is not used). `peft` (a peft config or PeftMethod, e.g. `${peft}`) adapts the LM; null trains
    it fully. `max_new_tokens` bounds generation (the data's `max_target_length`)."""

    def __init__(
        self,
        backbone: nn.Module | None = None,
        lm: PreTrainedModel | Callable[..., PreTrainedModel] | None = None,
        peft: Any | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        max_new_tokens: int = 32,
    ):
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["backbone", "lm", "peft", "optimizer", "scheduler"], logger=False)
        if lm is None:
            raise ValueError("task.lm: required (a causal LM, or a factory for one, e.g. backbone.build_lm)")
        if max_new_tokens < 1:
            raise ValueError(f"task.max_new_tokens: must be >= 1, got {max_new_tokens}")
        if not isinstance(lm, nn.Module):
            if backbone is None:
                raise ValueError("task.lm: a factory needs the backbone to size its vocabulary")
            lm = lm(vocab_size=backbone.get_input_embeddings().num_embeddings)
        self.model = apply_peft(lm, peft)
        self.tokenizer: Any = None  # the datamodule's, set at each evaluation start
        self.metrics = nn.ModuleDict(
            {
                stage: MetricCollection(
                    {"loss": MeanMetric().set_dtype(torch.float64), "bleu": BLEUScore(n_gram=4), "rougeL": RougeLF1()},
                    prefix=f"{stage}/",
                    compute_groups=False,
                )
                for stage in ("val", "test")
            }
        )

    def setup(self, stage: str) -> None:
        """Check that the longest prompt + target fits the LM's positions (a one-line error instead of an index one)."""
        hp = getattr(self.trainer.datamodule, "hparams", {})
        positions = getattr(causal_lm(self.model).config, "max_position_embeddings", None)
        if positions and "max_length" in hp and "max_target_length" in hp:
            longest = max(hp["max_target_length"] + 1, self.hparams.max_new_tokens)  # teacher-forced or generated
            if hp["max_length"] + longest > positions:
                raise ValueError(
                    f"data.max_length={hp['max_length']} + {longest} target tokens (data.max_target_length"
                    f" + eos, or task.max_new_tokens) exceeds the LM's {positions} positions"
                )

    def on_evaluation_start(self, datamodule) -> None:
        self.tokenizer = datamodule.tokenizer  # decodes the generated explanations

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return target_token_losses(self.model, batch).mean()

    @torch.no_grad()
    def explain(self, batch: dict[str, Any], tokenizer: Any) -> list[str]:
        """Greedy continuation of each left-padded prompt, up to `max_new_tokens` or eos, decoded and stripped."""
        prompts, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
        generated = causal_lm(self.model).generate(
            input_ids=prompts,
            attention_mask=mask,
            max_new_tokens=self.hparams.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = []
        for row in generated[:, prompts.size(1) :].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def evaluate(self, batch: dict[str, Any], stage: str) -> None:
        metrics = self.metrics[stage]
        metrics["loss"].update(target_token_losses(self.model, batch))
        predictions, references = self.explain(batch, self.tokenizer), batch["references"]
        metrics["bleu"].update(predictions, [[r] for r in references])
        metrics["rougeL"].update(predictions, references)

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        values = {k: v.float() for k, v in super().epoch_metrics(stage).items()}  # synced across ranks
        values[f"{stage}/perplexity"] = torch.exp(values[f"{stage}/loss"])
        return values
