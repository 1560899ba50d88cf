"""BehaviourLogDataModule: a behaviour log → rendered, tokenized CTR samples (label = rating ≥ threshold)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from m6rec.data.datamodules.bucketing import LengthGroupedSampler
from m6rec.data.datamodules.ctr_dataset import CTRDataset, pad_collate
from m6rec.data.datamodules.eval_history import ALL_SPLITS, earlier_split_rows, request_histories, with_rows_replaced
from m6rec.data.datamodules.resumable import split_loader, trainer_world
from m6rec.data.datamodules.sample_cache import cache_dir, data_fingerprint, load_or_build
from m6rec.data.protocol.history import RaggedHistory, recent_training_rows
from m6rec.data.protocol.sampling import k_core, scored_events
from m6rec.data.protocol.splits import (
    SPLIT_NAMES,
    TRAIN,
    check_train_fraction,
    kept_train_rows,
    log_statistics,
    split_interactions,
    split_sizes,
)
from m6rec.data.ragged import Ragged
from m6rec.data.sources import registry
from m6rec.data.sources.movielens import SOURCES
from m6rec.data.sources.tables import InteractionTables
from m6rec.data.text.id_tokens import add_id_tokens, with_id_columns, without_id_columns
from m6rec.data.text.render import Templates, render_prompt
from m6rec.data.text.sample_prompts import encode_prompts, prompt_parts
from m6rec.data.text.tokenizer import load_pretrained_tokenizer, metadata_texts, train_bpe_tokenizer
from m6rec.utils.files import plain_container

log = logging.getLogger(__name__)
LOADERS = registry.LOADERS  # data.dataset → loader(root, **data.source)
# loader settings: they change neither the samples nor their cache key
NOT_SAMPLE_SETTINGS = (
    "data_dir",
    "root",
    "sources",
    "num_workers",
    "batch_size",
    "eval_batch_size",
    "cache",
    "length_bucketing",
)
SAMPLE_COLUMNS = ("input_ids", "label", "split", "user_id", "item_id", "rating")  # CTRDataset's own; others → extra


class BehaviourLogDataModule(L.LightningDataModule):
    """A MovieLens dataset (`dataset`: ml-100k, ml-1m, ml-20m, ml-25m, ml-latest-small) as CTR text: each rating
    becomes "<user> rated <history>. Will <he> enjoy <item>?".

    `split` picks the protocol (see m6rec.data.protocol.splits); `root` points at a local copy (GroupLens `u.*` or
    RecBole atomic files), when null the dataset is fetched into `data_dir`. Histories come from the training split
    only, newest kept under the token budget, except under `loo`, where a validation (test) event follows all of the
    user's TRAIN (TRAIN + VALID) interactions (`eval_history`). `dataset` may also be atomic / table / amazon (read
    from `root`, options in `source`; see m6rec.data.sources.registry); `cache` keeps the tokenized samples on disk
    (`sample_cache`); `length_bucketing` batches training samples of similar length (`bucketing`);
    `duplicates` (error | warn | drop) handles repeated (user, item) interactions (m6rec.data.sources.validate).
    `id_tokens` adds one vocabulary token per user and item ("<u_12>", "<i_345>") that templates place with
    `{user_token}` / `{item_token}` (m6rec.data.text.id_tokens). `train_fraction` < 1 keeps that share of the
    TRAIN rows and drops the rest from the log; VALID and TEST keep their rows (a learning curve on one test set).
    """

    def __init__(
        self,
        data_dir: str,
        dataset: str = "ml-100k",
        root: str | None = None,
        sources: Sequence[str] = SOURCES,
        split: str = "random",
        split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        tie_break: str = "row",
        train_fraction: float = 1.0,
        label_threshold: float = 4.0,
        k_core: int = 0,
        implicit: bool = False,
        negatives: dict[str, Any] | None = None,
        history_len: int = 10,
        max_length: int = 64,
        templates: dict[str, str] | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 4096,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        source: dict[str, Any] | None = None,
        cache: bool = True,
        length_bucketing: bool = False,
        duplicates: str = "warn",
        id_tokens: bool = False,
    ):
        super().__init__()
        # plain containers (not OmegaConf nodes) so checkpoints load with weights_only=True
        source = plain_container(source or {})
        sources, split_ratios = [str(s) for s in sources], [float(r) for r in split_ratios]
        train_fraction = check_train_fraction(train_fraction)
        templates = {str(k): str(v) for k, v in (templates or {}).items()}
        negatives = {"ratio": 1, "strategy": "uniform", **dict(negatives or {})}
        negatives = {"ratio": int(negatives["ratio"]), "strategy": str(negatives["strategy"])}
        if train_fraction < 1 and implicit and negatives["ratio"] > 0:  # drawn from the smaller log: other negatives
            raise ValueError(
                "data.train_fraction: < 1 needs data.negatives.ratio=0 in implicit mode (the sampled test "
                "negatives would change with the fraction)"
            )
        self.save_hyperparameters()
        self.templates = Templates.from_config(templates)
        self.datasets: dict[str, CTRDataset] = {}
        self.stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ raw data
    def prepare_data(self) -> None:
        """Download once (rank 0 of each node); other ranks wait and read the cache."""
        self.raw_dir  # noqa: B018  (evaluating the property fetches)

    @cached_property
    def raw_dir(self) -> Path:
        """`data.root`, else the fetched cache (datasets that cannot be fetched say where to get them)."""
        hp = self.hparams
        return registry.raw_dir(hp.dataset, hp.root, hp.data_dir, hp.sources, hp.source)

    @cached_property
    def tables(self) -> InteractionTables:
        """The parsed dataset (`data.dataset`'s loader with `data.source`); the templates are checked against it."""
        tables = registry.load(self._check_dataset(), self.raw_dir, self.hparams.source, self.hparams.duplicates)
        tables = with_id_columns(tables) if self.hparams.id_tokens else tables
        self.templates.check_fields(tables.items.columns, tables.users.columns)
        return tables

    def _check_dataset(self) -> str:
        return registry.check_dataset(self.hparams.dataset)

    @cached_property
    def interactions(self) -> pd.DataFrame:
        """The log after k-core filtering (`data.k_core`: users and items with at least k interactions), less the
        TRAIN rows that `data.train_fraction` < 1 leaves out."""
        return self._log_and_split[0]

    @cached_property
    def _log_and_split(self) -> tuple[pd.DataFrame, np.ndarray]:
        """(the log, its split codes): the split is drawn on the k-cored log, then `train_fraction` keeps that share
        of its TRAIN rows (drawn with `split_seed`), so VALID / TEST hold the same rows whatever the fraction."""
        hp = self.hparams
        log = k_core(self.tables.interactions, hp.k_core, hp.k_core) if hp.k_core > 1 else self.tables.interactions
        split = split_interactions(log, hp.split, hp.split_ratios, hp.split_seed, hp.tie_break)
        if hp.train_fraction == 1.0:
            return log, split
        keep = kept_train_rows(split, hp.train_fraction, hp.split_seed)
        return log[keep].reset_index(drop=True), split[keep]

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the raw files and of every data setting that changes the samples."""
        source = registry.check_source(self.hparams.dataset, self.hparams.source)
        files = registry.raw_files(self._check_dataset(), self.raw_dir, source)
        return data_fingerprint(files, {k: v for k, v in self.hparams.items() if k not in NOT_SAMPLE_SETTINGS})

    # ------------------------------------------------------------------ tokenizer
    @cached_property
    def tokenizer(self):
        """The backbone's tokenizer when `tokenizer` names one, else BPE trained on item/user metadata only.

        Metadata holds no interactions, so nothing from validation/test can reach the vocabulary. With `id_tokens`,
        the BPE trains on the texts without them and the user / item tokens are added after it.
        """
        if self.hparams.tokenizer:
            tok = load_pretrained_tokenizer(self.hparams.tokenizer)
        else:
            items = without_id_columns(self.tables.items.to_dict("records"))
            users = without_id_columns(self.tables.users.to_dict("records"))
            texts = metadata_texts(items, users, self.templates)
            tok = train_bpe_tokenizer(texts, self.hparams.vocab_size, Path(self.hparams.data_dir) / "tokenizers")
        return add_id_tokens(tok, self.tables) if self.hparams.id_tokens else tok

    # ------------------------------------------------------------------ samples
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.hparams.cache:  # `data.cache`: tokenized samples under <data_dir>/cache/<key>/ (see sample_cache)
            kind = f"{type(self).__module__}.{type(self).__qualname__}"  # a subclass may build other samples
            path = cache_dir(self.hparams.data_dir, f"{self.fingerprint}|{kind}", self.tokenizer)
            columns, meta, hit = load_or_build(path, self._columns_and_stats)
            self.stats = meta["stats"]
            log.info("Samples %s %s", "read from" if hit else "cached in", path)
        else:
            columns = self.sample_columns()
            self.stats = self.split_statistics(columns["label"], columns["split"])
        input_ids, labels, split = Ragged.from_rows(columns["input_ids"]), columns["label"], columns["split"]
        users, items, ratings = columns["user_id"], columns["item_id"], columns["rating"]
        extra = {
            k: Ragged.from_rows(v) if isinstance(v, list) else v for k, v in columns.items() if k not in SAMPLE_COLUMNS
        }
        for code, name in SPLIT_NAMES.items():  # each split a view of the same arrays (no per-sample objects)
            rows = np.flatnonzero(split == code)
            extra_rows = {k: v.take(rows) if isinstance(v, Ragged) else v[rows] for k, v in extra.items()}
            self.datasets[name] = CTRDataset(
                input_ids.take(rows), labels[rows], users[rows], items[rows], ratings[rows], extra_rows
            )
        log.info("Data %s: %s", self.fingerprint, self.stats)

    def _columns_and_stats(self) -> tuple[dict[str, Any], dict[str, Any]]:
        columns = self.sample_columns()
        return columns, {"stats": self.split_statistics(columns["label"], columns["split"])}

    def sample_columns(self) -> dict[str, Any]:
        """Every sample as columns: `encode_columns`' (input_ids, …), label, split, user_id, item_id, rating."""
        samples = self.samples()
        split, observed = samples["split"].to_numpy(), samples["observed"].to_numpy()
        histories = recent_training_rows(samples, (split == TRAIN) & observed, self.hparams.history_len)
        if self.hparams.split == "loo":  # held-out events follow every earlier-split interaction of their user
            held_out = np.flatnonzero(split != TRAIN)
            earlier = earlier_split_rows(samples, split, observed, held_out, self.hparams.history_len)
            histories = with_rows_replaced(histories, held_out, earlier)
        return {
            **self.encode_columns(samples, histories),
            "label": samples["label"].to_numpy(np.float32),
            "split": samples["split"].to_numpy(np.int8),
            "user_id": samples["user_id"].to_numpy(np.int64),
            "item_id": samples["item_id"].to_numpy(np.int64),
            "rating": samples["rating"].to_numpy(np.float32),
        }

    def split_codes(self) -> np.ndarray:
        """TRAIN/VALID/TEST code of every row of `interactions` under `data.split` (random | loo | temporal |
        cold_items; `loo` orders same-second interactions by `data.tie_break`)."""
        return self._log_and_split[1].copy()

    def samples(self) -> pd.DataFrame:
        """Every scored event with its `split`, `label` and whether it was `observed` (a real interaction).

        Explicit mode: label = rating >= `label_threshold`. Implicit mode (`data.implicit`): every interaction is a
        positive, and `negatives.ratio` unobserved items per positive are sampled within each split, never an item
        the user has in any split.
        """
        hp = self.hparams
        inter = self.interactions.assign(split=self.split_codes())
        return scored_events(inter, hp.implicit, hp.label_threshold, hp.negatives, hp.split_seed)

    def render_texts(self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]) -> list[str]:
        """The prompt of every sample with its full history (no token budget applied)."""
        parts = self.sample_parts(samples, histories)
        return [render_prompt(u, p, h, c, self.templates) for u, p, h, c in parts]

    def sample_parts(
        self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]
    ) -> list[tuple[str, str, list[str], str]]:
        """(user text, pronoun, history pieces, candidate text) of every sample (see `prompt_parts`): the texts that
        `render_texts` and the list-based encoders (late segments, next-item queries, explanations) start from; a
        DataModule overrides it to say a part differently (e.g. the candidate with its rating)."""
        return prompt_parts(self.tables, self.templates, samples, histories)

    def encode_columns(
        self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]] | RaggedHistory
    ) -> dict[str, Ragged | list[np.ndarray]]:
        """What the model reads of each sample: its prompt's token ids (`input_ids`, oldest history items dropped to
        fit `max_length`); `histories` as (item, rating) lists or as rows of `samples`. A subclass may add columns."""
        hp = self.hparams
        return {
            "input_ids": encode_prompts(self.tables, self.templates, self.tokenizer, hp.max_length, samples, histories)
        }

    def request_rows(self, user_id: int, item_ids: Sequence[int], before: int = ALL_SPLITS) -> list[dict[str, Any]]:
        """Dataset-style rows (label 0) of `request_columns`, ready for `collate_fn()`: what the recommender scores."""
        columns = self.request_columns(user_id, item_ids, before)
        return [
            {"label": 0.0, "user_id": user_id, "item_id": item, **{k: v[j] for k, v in columns.items()}}
            for j, item in enumerate(item_ids)
        ]

    def request_columns(
        self, user_id: int, item_ids: Sequence[int], before: int = ALL_SPLITS
    ) -> dict[str, Ragged | list[np.ndarray]]:
        """`encode_columns` of the (user, item) events that follow all of the user's interactions in the splits before
        `before` (default: every split; `before=TEST` gives a `loo` test event's prompt): "<user> rated <history>.
        Will <pronoun> enjoy <item>?" with the user's most recent of those interactions."""
        query, histories = request_histories(
            self.interactions, self.split_codes(), user_id, item_ids, before, self.hparams.history_len
        )
        return self.encode_columns(query, histories)

    def split_statistics(self, labels: np.ndarray, split: np.ndarray) -> dict[str, Any]:
        """`stats`: the log's users, items, interactions, density and fingerprint; each split's size and positive
        rate (`labels`, `split`: one per sample)."""
        return {**log_statistics(self.interactions), "fingerprint": self.fingerprint, **split_sizes(labels, split)}

    # ------------------------------------------------------------------ loaders
    def _loader(self, name: str, train: bool) -> DataLoader:
        dataset, hp, sampler = self.datasets[name], self.hparams, None
        if train and hp.length_bucketing:  # `data.length_bucketing`: batches of similar lengths
            lengths = Ragged.from_rows(dataset.input_ids).lengths
            sampler = LengthGroupedSampler(
                lengths, hp.batch_size, *trainer_world(self.trainer), torch.initial_seed() % 2**32
            )
        return split_loader(
            dataset, train, self.trainer, hp.batch_size, hp.eval_batch_size, hp.num_workers, self.collate_fn(), sampler
        )

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Dataset rows → a batch (right-padded `input_ids` + `attention_mask`, labels, ids, ratings)."""
        return pad_collate(self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
