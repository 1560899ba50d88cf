"""NextItemDataModule: a behaviour log as (user query text → next item) pairs for two-tower retrieval.

A query is "<user> rated <history>." (`query_template`), an item is its candidate text ("Heat (1995), Action, …").
Training pairs: each positive TRAIN interaction, its query holding the user's training interactions strictly before
it. Evaluation: each positive VALID / TEST interaction, its query holding the user's most recent interactions of the
earlier splits (TRAIN at validation, TRAIN + VALID at test, as SASRec / RecBole; `eval_history`), ranked
against the whole catalogue with exactly those items excluded (RecBole's full-sort protocol; never the user's own
targets of that split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.eval_history import ALL_SPLITS, earlier_split_rows
from m6rec.data.datamodules.resumable import split_loader
from m6rec.data.protocol.history import recent_training_history
from m6rec.data.protocol.splits import SPLIT_NAMES, TEST, TRAIN, VALID
from m6rec.data.text.batch_prompts import encode_parts
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import render_item_text, render_prompt

QueryParts = tuple[str, str, list[str]]  # user text, pronoun, history pieces (oldest → newest)


class NextItemDataset(Dataset):
    """Token ids per row plus its item (the target, or the catalogue item itself), user, and optionally the target's
    own token ids (`item_tokens`, for the item tower), the log of its item's share of all rows (`item_log_q`, the
    in-batch sampling correction) and the items to exclude from its ranking (`excluded`)."""

    def __init__(
        self,
        input_ids: list[np.ndarray],
        item_ids: np.ndarray,
        user_ids: np.ndarray | None = None,
        item_tokens: dict[int, np.ndarray] | None = None,
        excluded: list[np.ndarray] | None = None,
    ):
        self.input_ids, self.item_ids, self.item_tokens, self.excluded = input_ids, item_ids, item_tokens, excluded
        self.user_ids = np.zeros(len(item_ids), np.int64) if user_ids is None else user_ids
        self.item_log_q: np.ndarray | None = None
        if item_tokens is not None and len(item_ids):
            _, inverse, counts = np.unique(item_ids, return_inverse=True, return_counts=True)
            self.item_log_q = np.log(counts / counts.sum()).astype(np.float32)[inverse]

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = {"input_ids": self.input_ids[i], "item_id": int(self.item_ids[i]), "user_id": int(self.user_ids[i])}
        if self.item_tokens is not None:
            row["item_input_ids"] = self.item_tokens[row["item_id"]]
        if self.item_log_q is not None:
            row["item_log_q"] = self.item_log_q[i]
        if self.excluded is not None:
            row["excluded"] = self.excluded[i]
        return row


def _pad(sequences: list[np.ndarray], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
        mask[row, : len(s)] = 1
    return ids, mask


def next_item_collate(pad_id: int):
    """Right-pad queries (`input_ids`, `attention_mask`), target items (`item_input_ids`, `item_attention_mask`) and
    the excluded item ids (`excluded_item_ids`, padded with -1); stack `item_log_q` where rows have it."""

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = _pad([b["input_ids"] for b in batch], pad_id)
        out = {
            "input_ids": ids,
            "attention_mask": mask,
            "item_ids": torch.tensor([b["item_id"] for b in batch], dtype=torch.long),
            "user_ids": torch.tensor([b["user_id"] for b in batch], dtype=torch.long),
        }
        if "item_input_ids" in batch[0]:
            out["item_input_ids"], out["item_attention_mask"] = _pad([b["item_input_ids"] for b in batch], pad_id)
        if "item_log_q" in batch[0]:
            out["item_log_q"] = torch.tensor([b["item_log_q"] for b in batch], dtype=torch.float32)
        if "excluded" in batch[0]:
            excluded = torch.full((len(batch), max(len(b["excluded"]) for b in batch)), -1, dtype=torch.long)
            for row, b in enumerate(batch):
                excluded[row, : len(b["excluded"])] = torch.from_numpy(np.asarray(b["excluded"], dtype=np.int64))
            out["excluded_item_ids"] = excluded
        return out

    return collate


class NextItemDataModule(BehaviourLogDataModule):
    """Next-item retrieval over a BehaviourLogDataModule's log, split and tokenizer (default: leave-one-out split,
    implicit feedback, no sampled negatives). `query_template` uses {user}, {pronoun} and {history}."""

    def __init__(self, query_template: str = "{user} rated {history}.", **kwargs: Any):
        settings = {"split": "loo", "implicit": True, "negatives": {"ratio": 0}, **kwargs}
        kwargs = {}  # Lightning's hparams merge every __init__ frame: let the parent's normalised values stand
        super().__init__(**settings)
        if "{candidate}" in query_template:
            raise ValueError("data.query_template: a query must not contain {candidate}")
        try:  # the query is a prompt whose candidate is empty
            self.query_templates = replace(self.templates, prompt=query_template + "{candidate}")
        except ValueError as err:
            raise ValueError(str(err).replace("data.templates.prompt", "data.query_template")) from err
        self.catalogue_ids = np.empty(0, np.int64)
        self.query_parts: dict[str, list[QueryParts]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        samples = self.samples()
        split, observed = samples["split"].to_numpy(), samples["observed"].to_numpy()
        positive = observed & (samples["label"].to_numpy() == 1)
        is_history = (split == TRAIN) & observed
        self.catalogue_ids = np.unique(self.interactions["item_id"].to_numpy()).astype(np.int64)
        item_tokens = self._item_tokens()
        train_rows = np.flatnonzero(positive & (split == TRAIN))
        histories = recent_training_history(samples, is_history, self.hparams.history_len)
        self._add("train", samples.iloc[train_rows], [histories[r] for r in train_rows], item_tokens=item_tokens)
        seen = samples[observed][["user_id", "item_id", "split"]]
        for code in (VALID, TEST):
            rows = np.flatnonzero(positive & (split == code))
            events = samples.iloc[rows]
            histories = self._eval_histories(samples, split, observed, rows)
            self._add(SPLIT_NAMES[code], events, histories, excluded=_excluded_items(seen, events, before=code))
        self.datasets["catalogue"] = NextItemDataset([item_tokens[i] for i in self.catalogue_ids], self.catalogue_ids)
        self.stats = {
            **self.split_statistics(np.ones(positive.sum(), np.float32), split[positive]),
            "catalogue": len(self.catalogue_ids),
        }

    def _eval_histories(
        self, frame: pd.DataFrame, split: np.ndarray, is_known: np.ndarray, rows: np.ndarray
    ) -> list[list[tuple[int, float]]]:
        """Each of `rows`' user's most recent `is_known` interactions of the splits before the row's own (whatever
        their time relative to it), as (item, rating) lists."""
        ragged = earlier_split_rows(frame, split, is_known, rows, self.hparams.history_len)
        return ragged.as_lists(frame["item_id"].to_numpy(), frame["rating"].to_numpy())

    def _add(
        self,
        name: str,
        events: pd.DataFrame,
        histories: list[list[tuple[int, float]]],
        item_tokens: dict[int, np.ndarray] | None = None,
        excluded: list[np.ndarray] | None = None,
    ) -> None:
        self.query_parts[name], queries = self._encode_queries(events, histories)
        self.datasets[name] = NextItemDataset(
            queries, events["item_id"].to_numpy(np.int64), events["user_id"].to_numpy(np.int64), item_tokens, excluded
        )

    def _encode_queries(
        self, events: pd.DataFrame, histories: list[list[tuple[int, float]]]
    ) -> tuple[list[QueryParts], list[np.ndarray]]:
        """Each event's query parts and token ids (`query_templates`, empty candidate, oldest history dropped first)."""
        parts = [(u, p, h) for u, p, h, _ in self.sample_parts(events, histories)]
        encoder = SegmentEncoder(self.tokenizer, self.query_templates, self.hparams.max_length)  # caches segments
        return parts, list(encode_parts(encoder, [(u, p, h, "") for u, p, h in parts]))

    def encode_query(self, user_id: int, before: int = ALL_SPLITS) -> np.ndarray:
        """Token ids of `user_id`'s query over the user's most recent interactions in the splits before `before`
        (default: all of them; `before=TEST` gives the test query), built as evaluation builds it (setup() not
        needed)."""
        inter = self.interactions
        mine = (inter["user_id"] == user_id).to_numpy()
        placeholder = self.tables.items["item_id"].iloc[0]  # sample_parts renders a candidate; the query drops it
        event = pd.DataFrame(
            {"user_id": [user_id], "item_id": [placeholder], "rating": [np.nan], "timestamp": [0], "split": [before]}
        )
        frame = pd.concat([inter[mine].assign(split=self.split_codes()[mine])[event.columns], event], ignore_index=True)
        known = np.arange(len(frame)) < len(frame) - 1
        histories = self._eval_histories(frame, frame["split"].to_numpy(), known, np.array([len(frame) - 1]))
        (query,) = self._encode_queries(event, histories)[1]
        return query

    def encode_items(self, item_ids: Sequence[int]) -> list[np.ndarray]:
        """Token ids of each item's text (the candidate template), cut to `max_length` (setup() not needed)."""
        if not len(item_ids):
            return []
        items = {row["item_id"]: row for row in self.tables.items.to_dict("records")}
        texts = [render_item_text(items[i], self.templates) for i in item_ids]
        ids = self.tokenizer(texts, truncation=True, max_length=self.hparams.max_length)["input_ids"]
        return [np.asarray(x, dtype=np.int32) for x in ids]

    def _item_tokens(self) -> dict[int, np.ndarray]:
        """Token ids of every catalogue item's text (`encode_items`), by item id."""
        ids = self.encode_items(self.catalogue_ids.tolist())
        return {int(i): x for i, x in zip(self.catalogue_ids, ids, strict=True)}

    def query_texts(self, name: str) -> list[str]:
        """The query text of every row of split `name` with its full history (no token budget applied)."""
        return [render_prompt(u, p, h, "", self.query_templates) for u, p, h in self.query_parts[name]]

    def _loader(self, name: str, train: bool) -> DataLoader:
        hp = self.hparams  # the catalogue is not sharded: each rank embeds all of it
        return split_loader(
            self.datasets[name],
            train,
            self.trainer,
            hp.batch_size,
            hp.eval_batch_size,
            hp.num_workers,
            self.collate_fn(),
            shard_eval=name != "catalogue",
        )

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Rows → a batch of padded queries (+ target items, excluded ids, log q where rows have them)."""
        return next_item_collate(self.tokenizer.pad_token_id)

    def catalogue_dataloader(self) -> DataLoader:
        """Every catalogue item's text, in `catalogue_ids` order (not sharded: each rank embeds the whole catalogue)."""
        return self._loader("catalogue", train=False)


def _excluded_items(seen: pd.DataFrame, events: pd.DataFrame, before: int) -> list[np.ndarray]:
    """Per event, the items its user has in the splits before `before` (TRAIN, and VALID for TEST), minus the user's
    targets in split `before`."""
    earlier = seen[seen["split"] < before].groupby("user_id")["item_id"].apply(set).to_dict()
    targets = events.groupby("user_id")["item_id"].apply(set).to_dict()
    return [np.array(sorted(earlier.get(u, set()) - targets[u]), dtype=np.int64) for u in events["user_id"].tolist()]
