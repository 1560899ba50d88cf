"""Language-model pretraining: CausalLMSystem (next token) and MaskedLMSystem (BERT masking or span corruption);
loss and perplexity over every evaluated token; SaveHFPretrained writes the best weights as a standard HF folder."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from m6rec.peft.checkpoint import restore_frozen
from m6rec.systems.base import TaskSystem
from m6rec.utils.files import atomic_dir

log = logging.getLogger(__name__)
IGNORE = -100  # label of a position without loss


def bert_mask(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: in each row exactly max(1, round(probability * n)) of its n maskable tokens are selected;
    80 % become `mask_token_id`, 10 % a random id, 10 % stay. Labels: the original id where selected."""
    shape, device = input_ids.shape, input_ids.device
    scores = torch.rand(shape, generator=generator).to(device).masked_fill(~maskable, 2.0)
    counts = maskable.sum(1)
    wanted = torch.where(counts > 0, torch.floor(counts * probability + 0.5).clamp_min(1), 0)
    selected = scores.argsort(1).argsort(1) < wanted[:, None]  # the `wanted` lowest scores of each row
    action = torch.rand(shape, generator=generator).to(device)
    random_ids = torch.randint(vocab_size, shape, generator=generator).to(device)
    inputs = input_ids.masked_fill(selected & (action < 0.8), mask_token_id)
    replace = selected & (action >= 0.8) & (action < 0.9)
    inputs = torch.where(replace, random_ids, inputs)
    return inputs, input_ids.masked_fill(~selected, IGNORE)


def span_mask(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    probability: float,
    generator: torch.Generator,
    mean_span: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simplified T5 span corruption: spans start at a position with probability `probability / mean_span`, last
    1..2*mean_span-1 tokens (uniform, mean `mean_span`), and every maskable token they cover becomes one
    `mask_token_id`; labels: the original ids there."""
    shape, device = input_ids.shape, input_ids.device
    starts = (torch.rand(shape, generator=generator) < probability / mean_span).to(device)
    lengths = torch.randint(1, 2 * mean_span, shape, generator=generator).to(device)
    selected = torch.zeros_like(starts)
    for offset in range(2 * mean_span - 1):
        covering = starts & (lengths > offset)
        selected[:, offset:] |= covering[:, : shape[1] - offset]
    selected &= maskable
    return input_ids.masked_fill(selected, mask_token_id), input_ids.masked_fill(~selected, IGNORE)


class _LanguageModelSystem(TaskSystem):
    """Shared by both objectives: token-weighted loss, `<stage>/loss` and `<stage>/perplexity` (TaskSystem supplies
    the optimizer groups, parameter logging and adapter-only checkpoints)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        hf_dir: str | None = None,
    ):
        super().__init__(optimizer, scheduler)
        self.model, self._tokenizer = model, tokenizer
        # the mean cross-entropy over every evaluated token (float64, synced across ranks by torchmetrics)
        self.metrics = nn.ModuleDict({stage: MeanMetric().set_dtype(torch.float64) for stage in ("val", "test")})

    @property
    def tokenizer(self) -> Any | None:
        """The tokenizer given, else the datamodule's."""
        if self._tokenizer is None and self._trainer is not None:
            return getattr(self.trainer.datamodule, "tokenizer", None)
        return self._tokenizer

    def token_losses(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Cross-entropy of every predicted token of the batch (1-D)."""
        raise NotImplementedError

    def configure_callbacks(self) -> list[L.Callback]:
        return [SaveHFPretrained(self.hparams.hf_dir)] if self.hparams.get("hf_dir") else []

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = self.token_losses(batch, "train")
        return losses.mean() if losses.numel() else self.model.get_input_embeddings().weight.sum() * 0.0

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        losses = self.token_losses(batch, stage)
        if losses.numel():
            self.metrics[stage].update(losses)

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        mean = super().epoch_metrics(stage)  # the whole set's mean token loss
        return {f"{stage}/loss": mean.float(), f"{stage}/perplexity": torch.exp(mean).float()}


class CausalLMSystem(_LanguageModelSystem):
    """Next-token prediction on every real (attention_mask = 1) token after the first of each sequence."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        hf_dir: str | None = None,
        objective: str = "clm",
    ):
        if objective != "clm":
            raise ValueError(f"task.objective: CausalLMSystem trains `clm`, got {objective!r}")
        super().__init__(model, tokenizer, optimizer, scheduler, hf_dir)
        self.save_hyperparameters(ignore=["model", "tokenizer", "optimizer", "scheduler"], logger=False)

    def token_losses(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE)
        keep = targets != IGNORE
        return F.cross_entropy(logits[keep].float(), targets[keep], reduction="none")


class MaskedLMSystem(_LanguageModelSystem):
    """Predict masked tokens: `objective="mlm"` (BERT 80/10/10) or `"span"` (spans of mean length 3, all [MASK]).

    Masks come from a torch.Generator seeded by (`seed` or the global seed, epoch, rank): deterministic given the
    seed; validation/test masks are the same every epoch."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        hf_dir: str | None = None,
        objective: str = "mlm",
        mlm_probability: float = 0.15,
        seed: int | None = None,
    ):
        if objective not in ("mlm", "span"):
            raise ValueError(f"task.objective: MaskedLMSystem trains `mlm` or `span`, got {objective!r}")
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"task.mlm_probability: expected a value in (0, 1), got {mlm_probability}")
        super().__init__(model, tokenizer, optimizer, scheduler, hf_dir)
        self.save_hyperparameters(ignore=["model", "tokenizer", "optimizer", "scheduler"], logger=False)
        self.objective = objective
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, stage: str) -> torch.Generator:
        """The mask generator of `stage` (train: reseeded each epoch; val/test: reseeded each evaluation)."""
        if stage not in self._generators:
            seed = self.hparams.seed if self.hparams.seed is not None else torch.initial_seed()
            epoch = self.current_epoch if stage == "train" else 0
            mixed = ((seed * 1_000_003 + epoch) * 1_009 + self.global_rank) * 3 + ("train", "val", "test").index(stage)
            self._generators[stage] = torch.Generator().manual_seed(mixed % 2**63)
        return self._generators[stage]

    def on_train_epoch_start(self) -> None:
        self._generators.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._generators.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._generators.pop("test", None)

    def mask(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted input ids, labels) for a batch; special and padding tokens are never selected."""
        tokenizer = self.tokenizer
        if tokenizer is None or tokenizer.mask_token_id is None:
            raise ValueError(f"task.objective={self.objective}: needs a tokenizer with a mask token (e.g. [MASK])")
        input_ids = batch["input_ids"]
        special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=input_ids.device)
        maskable = batch["attention_mask"].bool() & ~torch.isin(input_ids, special)
        generator, p = self._generator(stage), self.hparams.mlm_probability
        if self.objective == "span":
            return span_mask(input_ids, maskable, tokenizer.mask_token_id, p, generator)
        return bert_mask(input_ids, maskable, tokenizer.mask_token_id, len(tokenizer), p, generator)

    def token_losses(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, labels = self.mask(batch, stage)
        logits = self.model(input_ids=inputs, attention_mask=batch["attention_mask"]).logits
        keep = labels != IGNORE
        return F.cross_entropy(logits[keep].float(), labels[keep], reduction="none")


def save_hf_folder(model: nn.Module, tokenizer: Any | None, path: str | Path) -> Path:
    """Write `model` (merged first if it is a peft model) and `tokenizer` as a standard HF folder, atomically."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(path)


class SaveHFPretrained(L.Callback):
    """At the end of fit, write the best checkpoint's weights (the current ones without a ModelCheckpoint that has
    a best) and the tokenizer to `dirpath` as a folder that `from_pretrained` loads."""

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            model = pl_module.model
            checkpoint = trainer.checkpoint_callback
            best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
            if best:
                saved = torch.load(best, map_location="cpu", weights_only=True)
                restore_frozen(pl_module, saved, f"checkpoint {best}")  # an adapter-only one gets its backbone back
                state = saved["state_dict"]
                model = copy.deepcopy(model).cpu()
                model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
            save_hf_folder(model, getattr(pl_module, "tokenizer", None), self.dirpath)
            log.info("Saved the %s weights as an HF folder: %s", "best" if best else "final", self.dirpath)
        trainer.strategy.barrier()
