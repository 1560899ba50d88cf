"""ExplanationDataModule: observed interactions with review text as (prompt → review) pairs for causal-LM explanation.

The prompt is the CTR-style behaviour text of the (user, item) event, ending in "because": "A user rated Foo (5/5);
Bar (3/5). Then they rated Baz (4/5) because"; the target is the event's review (`target_field`), cut to
`max_target_length` tokens, then eos. Histories hold the user's training interactions strictly earlier than the event
(with or without text); the BPE tokenizer sees metadata and TRAINING reviews only.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.bucketing import LengthGroupedSampler
from m6rec.data.datamodules.eval_history import earlier_split_rows
from m6rec.data.datamodules.resumable import split_loader, trainer_world
from m6rec.data.protocol.history import recent_training_history
from m6rec.data.protocol.splits import SPLIT_NAMES, TRAIN
from m6rec.data.ragged import Ragged
from m6rec.data.text.batch_prompts import encode_parts
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import (
    render_history_item,
    render_item_text,
    render_prompt,
    render_user_text,
)
from m6rec.data.text.tokenizer import load_pretrained_tokenizer, train_bpe_tokenizer

log = logging.getLogger(__name__)
IGNORE = -100  # label of a position without loss
DEFAULT_PROMPT = "{user} rated {history}. Then {pronoun} rated {candidate} because"
REVIEW_DATASETS = "data=amazon2018 or data=amazon2023, with data.source.keep_text=true"


class ExplanationDataset(Dataset):
    """Per event: prompt ids, target ids (review tokens + eos), the reference text (the target decoded, no eos)."""

    def __init__(
        self,
        prompts: list[np.ndarray],
        targets: list[np.ndarray],
        references: list[str],
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        ratings: np.ndarray,
    ):
        self.prompts, self.targets, self.references = prompts, targets, references
        self.user_ids, self.item_ids, self.ratings = user_ids, item_ids, ratings

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "prompt": self.prompts[i],
            "target": self.targets[i],
            "reference": self.references[i],
            "user_id": int(self.user_ids[i]),
            "item_id": int(self.item_ids[i]),
            "rating": float(self.ratings[i]),
        }


def explanation_collate(pad_id: int):
    """`input_ids` = prompt + target right-padded, `labels` = target ids there and -100 elsewhere; `prompt_input_ids`
    = the prompt alone left-padded (for batched generation); `references` = the reference texts."""

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [torch.from_numpy(b["prompt"].astype(np.int64)) for b in batch]
        targets = [torch.from_numpy(b["target"].astype(np.int64)) for b in batch]
        n, longest = len(batch), max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
        widest = max(len(p) for p in prompts)
        ids, labels = torch.full((n, longest), pad_id), torch.full((n, longest), IGNORE)
        mask = torch.zeros((n, longest), dtype=torch.long)
        prompt_ids, prompt_mask = torch.full((n, widest), pad_id), torch.zeros((n, widest), dtype=torch.long)
        for row, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
            p, t = len(prompt), len(target)
            ids[row, :p], ids[row, p : p + t], labels[row, p : p + t], mask[row, : p + t] = prompt, target, target, 1
            prompt_ids[row, widest - p :], prompt_mask[row, widest - p :] = prompt, 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "prompt_input_ids": prompt_ids,
            "prompt_attention_mask": prompt_mask,
            "references": [b["reference"] for b in batch],
            "user_ids": torch.tensor([b["user_id"] for b in batch], dtype=torch.long),
            "item_ids": torch.tensor([b["item_id"] for b in batch], dtype=torch.long),
            "ratings": torch.tensor([b["rating"] for b in batch], dtype=torch.float32),
        }

    return collate


class ExplanationDataModule(BehaviourLogDataModule):
    """Explanation generation over a review dataset (Amazon): every observed interaction whose `target_field`
    ("review" or "summary") is non-empty. `explain_prompt` replaces `templates.prompt` (fields user, history,
    pronoun, candidate); with `condition_on_rating` the candidate is rendered with its rating (`templates.history_item`,
    e.g. "Baz (4/5)"). `tokenizer_max_reviews` caps how many training reviews join the BPE corpus (null: all)."""

    def __init__(
        self,
        target_field: str = "review",
        max_target_length: int = 32,
        explain_prompt: str = DEFAULT_PROMPT,
        condition_on_rating: bool = True,
        tokenizer_max_reviews: int | None = 100_000,
        **kwargs: Any,
    ):
        settings = {**kwargs, "implicit": False}  # explanations are of observed interactions only
        kwargs = {}  # Lightning's hparams merge every __init__ frame: let the parent's normalised values stand
        super().__init__(**settings)
        if max_target_length < 1:
            raise ValueError(f"data.max_target_length: must be >= 1, got {max_target_length}")
        try:
            self.templates = replace(self.templates, prompt=explain_prompt)
        except ValueError as err:
            raise ValueError(str(err).replace("data.templates.prompt", "data.explain_prompt")) from None
        self.datasets: dict[str, ExplanationDataset] = {}  # type: ignore[assignment]

    # ------------------------------------------------------------------ targets and tokenizer
    def target_texts(self) -> pd.Series:
        """The `target_field` text of every interaction (after k-core), "" where absent; a one-line error for a
        dataset without it."""
        field, inter = self.hparams.target_field, self.interactions
        if field not in inter.columns:
            if not {"review", "summary"} & set(inter.columns):
                raise ValueError(
                    f"data.dataset={self.hparams.dataset} has no review text: the explain task needs "
                    f"reviews ({REVIEW_DATASETS})"
                )
            raise ValueError(f"data.target_field: {field!r} is not a text column; use 'review' or 'summary'")
        return inter[field].fillna("").astype(str).str.strip()

    def tokenizer_corpus(self) -> list[str]:
        """What a from-scratch BPE is trained on: the parent's item/user metadata texts plus TRAINING reviews (never
        validation/test ones), at most `tokenizer_max_reviews` of them (the first in log order)."""
        t, tables = self.templates, self.tables
        items, users = tables.items.to_dict("records"), tables.users.to_dict("records")
        texts = [render_item_text(row, t) for row in items]
        texts += [render_history_item(row, r, t) for row in items for r in range(1, 6)]
        texts += [render_user_text(row, t) for row in users]
        texts += [render_prompt("", p, [], "", t) for p in ("he", "she", "they")]
        reviews = self.target_texts()[self.split_codes() == TRAIN]
        reviews = reviews[reviews != ""].tolist()
        cap = self.hparams.tokenizer_max_reviews
        return texts + (reviews if cap is None else reviews[:cap])

    @cached_property
    def tokenizer(self):
        if self.hparams.tokenizer:
            return load_pretrained_tokenizer(self.hparams.tokenizer)
        corpus = self.tokenizer_corpus()
        return train_bpe_tokenizer(corpus, self.hparams.vocab_size, Path(self.hparams.data_dir) / "tokenizers")

    # ------------------------------------------------------------------ samples
    def samples(self) -> pd.DataFrame:
        """Every observed interaction with its `split`, `observed` (True), `label` (rating >= threshold) and
        `target` text ("" where it has none)."""
        return super().samples().assign(target=self.target_texts().to_numpy())

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        samples = self.samples()
        split = samples["split"].to_numpy()
        histories = recent_training_history(samples, split == TRAIN, self.hparams.history_len)
        if self.hparams.split == "loo":  # as the CTR samples: held-out events follow every earlier-split interaction
            held_out = np.flatnonzero(split != TRAIN)
            earlier = earlier_split_rows(samples, split, np.ones(len(split), bool), held_out, self.hparams.history_len)
            pairs = earlier.as_lists(samples["item_id"].to_numpy(), samples["rating"].to_numpy())
            for row, history in zip(held_out.tolist(), pairs, strict=True):
                histories[row] = history
        keep = np.flatnonzero(samples["target"].to_numpy() != "")
        events, histories = samples.iloc[keep], [histories[r] for r in keep]
        prompts = self._prompt_ids(events, histories)
        targets, references = self._targets(events["target"].tolist())
        split = split[keep]
        users, items = events["user_id"].to_numpy(np.int64), events["item_id"].to_numpy(np.int64)
        ratings = events["rating"].to_numpy(np.float32)
        for code, name in SPLIT_NAMES.items():
            rows = np.flatnonzero(split == code)
            self.datasets[name] = ExplanationDataset(
                [prompts[r] for r in rows],
                [targets[r] for r in rows],
                [references[r] for r in rows],
                users[rows],
                items[rows],
                ratings[rows],
            )
        self.stats = {
            k: v
            for k, v in self.split_statistics(np.ones(len(split), np.float32), split).items()
            if not k.endswith("_positive_rate")
        }
        self.stats["mean_target_tokens"] = float(np.mean([len(t) - 1 for t in targets])) if targets else 0.0
        log.info("Data %s: %s", self.fingerprint, self.stats)

    def _prompt_ids(self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]) -> list[np.ndarray]:
        """Prompt ids, oldest history items dropped to fit `max_length` (SegmentEncoder), without the tokenizer's
        closing special tokens (e.g. [SEP]), which would end the text before the explanation."""
        parts = self.sample_parts(samples, histories)
        encoder = SegmentEncoder(self.tokenizer, self.templates, self.hparams.max_length)
        prompts = encode_parts(encoder, parts)
        return list(Ragged(prompts.flat, prompts.starts, prompts.lengths - len(encoder.suffix)))

    def sample_parts(
        self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]
    ) -> list[tuple[str, str, list[str], str]]:
        """The parent's parts, the candidate rendered with the event's rating when `condition_on_rating`."""
        parts = super().sample_parts(samples, histories)
        if not self.hparams.condition_on_rating:
            return parts
        items = {row["item_id"]: row for row in self.tables.items.to_dict("records")}
        rated: dict[tuple[int, float], str] = {}
        out = []
        keys = zip(samples["item_id"].tolist(), samples["rating"].tolist(), strict=True)
        for (user, pronoun, history, _), key in zip(parts, keys, strict=True):
            if key not in rated:
                rated[key] = render_history_item(items[key[0]], key[1], self.templates)
            out.append((user, pronoun, history, rated[key]))
        return out

    def _targets(self, texts: list[str]) -> tuple[list[np.ndarray], list[str]]:
        """Target ids (" " + text tokenized, cut to `max_target_length`, then eos) and their decoded references."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"data.tokenizer: {self.hparams.tokenizer!r} has no eos token to end an explanation")
        ids = self.tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        cut = [x[: self.hparams.max_target_length] for x in ids]
        references = [self.tokenizer.decode(x, skip_special_tokens=True).strip() for x in cut]
        return [np.asarray([*x, eos], dtype=np.int32) for x in cut], references

    # ------------------------------------------------------------------ loaders
    def _loader(self, name: str, train: bool) -> DataLoader:
        dataset, hp, sampler = self.datasets[name], self.hparams, None
        if train and hp.get("length_bucketing"):  # batches of similar prompt + target lengths
            lengths = [len(p) + len(t) for p, t in zip(dataset.prompts, dataset.targets, strict=True)]
            sampler = LengthGroupedSampler(
                lengths, hp.batch_size, *trainer_world(self.trainer), torch.initial_seed() % 2**32
            )
        collate = explanation_collate(self.tokenizer.pad_token_id)
        return split_loader(
            dataset, train, self.trainer, hp.batch_size, hp.eval_batch_size, hp.num_workers, collate, sampler
        )
