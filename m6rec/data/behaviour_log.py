"""BehaviourLogDataModule: a behaviour log → rendered, tokenized CTR samples (label = rating ≥ threshold)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from m6rec.data.encode import SegmentEncoder
from m6rec.data.history import recent_training_history
from m6rec.data.movielens import SOURCES, MovieLensTables, fetch_ml100k, load_ml100k
from m6rec.data.render import (
    Templates,
    prompt_segments,
    pronoun_for,
    render_history_item,
    render_item_text,
    render_prompt,
    render_user_text,
)
from m6rec.data.sampling import k_core, sample_negatives
from m6rec.data.sources import LOADERS as GROUPLENS_LOADERS
from m6rec.data.sources import fetch_grouplens
from m6rec.data.splits import SPLIT_NAMES, TRAIN, split_interactions
from m6rec.data.tokenizer import load_pretrained_tokenizer, train_bpe_tokenizer
from m6rec.utils.files import file_digest

log = logging.getLogger(__name__)
LOADERS = {"ml-100k": load_ml100k, **GROUPLENS_LOADERS}


class CTRDataset(Dataset):
    """Tokenized (user, candidate) events with a binary label."""

    def __init__(self, input_ids: list[np.ndarray], labels: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray):
        self.input_ids, self.labels, self.user_ids, self.item_ids = input_ids, labels, user_ids, item_ids

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], "label": self.labels[i], "user_id": self.user_ids[i],
                "item_id": self.item_ids[i]}  # fmt: skip


def pad_collate(pad_id: int):
    """Right-pad `input_ids` to the longest sequence in the batch and build the attention mask."""

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, b in enumerate(batch):
            ids[row, : len(b["input_ids"])] = torch.from_numpy(b["input_ids"].astype(np.int64))
            mask[row, : len(b["input_ids"])] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([b["label"] for b in batch], dtype=torch.float32),
            "user_ids": torch.tensor([b["user_id"] for b in batch], dtype=torch.long),
            "item_ids": torch.tensor([b["item_id"] for b in batch], dtype=torch.long),
        }

    return collate


class UnpaddedDistributedSampler(DistributedSampler):
    """Shard an evaluation set across ranks without repeating samples, so DDP metrics are exact."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.num_samples


class BehaviourLogDataModule(L.LightningDataModule):
    """A MovieLens dataset (`dataset`: ml-100k, ml-1m, ml-20m, ml-25m, ml-latest-small) as CTR text: each rating
    becomes "<user> rated <history>. Will <he> enjoy <item>?".

    `split` picks the protocol (see m6rec.data.splits); `root` points at a local copy (GroupLens `u.*` or RecBole
    atomic files), when null the dataset is fetched into `data_dir`. Histories come from the training split only,
    newest kept under the token budget.
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
    ):
        super().__init__()
        # plain containers (not OmegaConf nodes) so checkpoints load with weights_only=True
        sources, split_ratios = [str(s) for s in sources], [float(r) for r in split_ratios]
        templates = {str(k): str(v) for k, v in (templates or {}).items()}
        negatives = {"ratio": 1, "strategy": "uniform", **dict(negatives or {})}
        negatives = {"ratio": int(negatives["ratio"]), "strategy": str(negatives["strategy"])}
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
        dataset = self._check_dataset()
        if self.hparams.root is not None:
            return Path(self.hparams.root)
        if dataset == "ml-100k":
            return fetch_ml100k(Path(self.hparams.data_dir), tuple(self.hparams.sources))
        return fetch_grouplens(dataset, Path(self.hparams.data_dir))

    @cached_property
    def tables(self) -> MovieLensTables:
        return LOADERS[self._check_dataset()](self.raw_dir)

    def _check_dataset(self) -> str:
        if self.hparams.dataset not in LOADERS:
            raise ValueError(f"data.dataset: unknown dataset {self.hparams.dataset!r}; choose from {sorted(LOADERS)}")
        return self.hparams.dataset

    @cached_property
    def interactions(self) -> pd.DataFrame:
        """The log after k-core filtering (`data.k_core`: users and items with at least k interactions)."""
        k = self.hparams.k_core
        return k_core(self.tables.interactions, k, k) if k > 1 else self.tables.interactions

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the raw files and of every data setting that changes the samples."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.raw_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(f"{path.name}:{file_digest(path)}\n".encode())
        settings = {k: v for k, v in self.hparams.items() if k not in ("data_dir", "root", "sources", "num_workers")}
        h.update(repr(sorted((k, str(v)) for k, v in settings.items())).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ tokenizer
    @cached_property
    def tokenizer(self):
        """The backbone's tokenizer when `tokenizer` names one, else BPE trained on item/user metadata only.

        Metadata holds no interactions, so nothing from validation/test can reach the vocabulary.
        """
        if self.hparams.tokenizer:
            return load_pretrained_tokenizer(self.hparams.tokenizer)
        t, tables = self.templates, self.tables
        texts = [render_item_text(row, t) for row in tables.items.to_dict("records")]
        texts += [render_history_item(row, r, t) for row in tables.items.to_dict("records") for r in range(1, 6)]
        texts += [render_user_text(row, t) for row in tables.users.to_dict("records")]
        texts += [render_prompt("", p, [], "", t) for p in ("he", "she", "they")]
        return train_bpe_tokenizer(texts, self.hparams.vocab_size, Path(self.hparams.data_dir) / "tokenizers")

    # ------------------------------------------------------------------ samples
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        samples = self.samples()
        is_history = (samples["split"] == TRAIN).to_numpy() & samples["observed"].to_numpy()
        histories = recent_training_history(samples, is_history, self.hparams.history_len)
        input_ids = self._encode(samples, histories)
        labels, split = samples["label"].to_numpy(np.float32), samples["split"].to_numpy()
        users, items = samples["user_id"].to_numpy(), samples["item_id"].to_numpy()
        for code, name in SPLIT_NAMES.items():
            rows = np.flatnonzero(split == code)
            self.datasets[name] = CTRDataset([input_ids[r] for r in rows], labels[rows], users[rows], items[rows])
        self.stats = self._statistics(labels, split)
        log.info("Data %s: %s", self.fingerprint, self.stats)

    def split_codes(self) -> np.ndarray:
        """TRAIN/VALID/TEST code of every interaction under `data.split` (random | loo | temporal | cold_items)."""
        hp = self.hparams
        return split_interactions(self.interactions, hp.split, hp.split_ratios, hp.split_seed)

    def samples(self) -> pd.DataFrame:
        """Every scored event with its `split`, `label` and whether it was `observed` (a real interaction).

        Explicit mode: label = rating >= `label_threshold`. Implicit mode (`data.implicit`): every interaction is a
        positive, and `negatives.ratio` unobserved items per positive are sampled within each split, never an item
        the user has in any split.
        """
        hp = self.hparams
        inter = self.interactions.assign(split=self.split_codes(), observed=True)
        if not hp.implicit:
            return inter.assign(label=(inter["rating"] >= hp.label_threshold).astype(np.float32))
        inter = inter.assign(label=np.float32(1.0))
        parts = [inter]
        columns = ["user_id", "item_id", "rating", "timestamp"]
        for code in SPLIT_NAMES:
            own = inter["split"] == code
            if hp.negatives["ratio"] > 0 and own.any():
                negatives = sample_negatives(inter.loc[own, columns], hp.negatives["ratio"], hp.negatives["strategy"],
                                             seed=hp.split_seed + code, exclude=inter.loc[~own, columns])  # fmt: skip
                parts.append(negatives.assign(split=code, observed=False, label=np.float32(0.0)))
        return pd.concat(parts, ignore_index=True)

    def render_texts(self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]) -> list[str]:
        """The prompt of every sample with its full history (no token budget applied)."""
        parts = self._parts(samples, histories)
        return [render_prompt(u, p, h, c, self.templates) for u, p, h, c in parts]

    def _parts(
        self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]
    ) -> list[tuple[str, str, list[str], str]]:
        t, tables = self.templates, self.tables
        users = {row["user_id"]: row for row in tables.users.to_dict("records")}
        items = {row["item_id"]: row for row in tables.items.to_dict("records")}
        user_text = {u: (render_user_text(row, t), pronoun_for(row)) for u, row in users.items()}
        anonymous = (t.anonymous_user, "they")  # datasets without a user table (ML-20M/25M/latest)
        item_text = {i: render_item_text(row, t) for i, row in items.items()}
        piece: dict[tuple[int, float], str] = {}
        parts = []
        for u, i, hist in zip(samples["user_id"].tolist(), samples["item_id"].tolist(), histories, strict=True):
            pieces = []
            for key in hist:
                if key not in piece:
                    piece[key] = render_history_item(items[key[0]], key[1], t)
                pieces.append(piece[key])
            parts.append((*user_text.get(u, anonymous), pieces, item_text[i]))
        return parts

    def _encode(self, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]) -> list[np.ndarray]:
        """Token ids of every prompt, oldest history items dropped to fit `max_length` (see SegmentEncoder)."""
        parts = self._parts(samples, histories)
        encoder = SegmentEncoder(self.tokenizer, self.templates, self.hparams.max_length)
        encoder.prefetch(s for part in _covering_parts(parts) for s in prompt_segments(*part, self.templates))
        return [encoder.encode(*part) for part in parts]

    def _statistics(self, labels: np.ndarray, split: np.ndarray) -> dict[str, Any]:
        inter = self.interactions
        n_users, n_items = inter["user_id"].nunique(), inter["item_id"].nunique()
        stats: dict[str, Any] = {
            "users": n_users, "items": n_items, "interactions": len(inter),
            "density": len(inter) / (n_users * n_items), "fingerprint": self.fingerprint,
        }  # fmt: skip
        for code, name in SPLIT_NAMES.items():
            stats[f"{name}_size"] = int((split == code).sum())
            stats[f"{name}_positive_rate"] = float(labels[split == code].mean()) if (split == code).any() else 0.0
        return stats

    # ------------------------------------------------------------------ loaders
    def _loader(self, name: str, train: bool) -> DataLoader:
        dataset = self.datasets[name]
        sampler = None
        trainer = self.trainer
        if not train and trainer is not None and trainer.world_size > 1:
            sampler = UnpaddedDistributedSampler(dataset, trainer.world_size, trainer.global_rank)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size if train else self.hparams.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            collate_fn=pad_collate(self.tokenizer.pad_token_id),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


def _covering_parts(parts: list[tuple[str, str, list[str], str]]) -> list[tuple[str, str, list[str], str]]:
    """A few thousand synthetic prompts in which every distinct user, history item and candidate appears, so one
    batch call tokenizes (almost) every segment the real prompts use; rare misses are tokenized on demand."""
    users = sorted({(u, p) for u, p, _, _ in parts})
    pieces = sorted({piece for _, _, history, _ in parts for piece in history}) or [""]
    candidates = sorted({c for _, _, _, c in parts})
    n = max(len(users), len(pieces), len(candidates))
    return [(*users[k % len(users)], pieces[k % len(pieces) : k % len(pieces) + 2], candidates[k % len(candidates)])
            for k in range(n)]  # fmt: skip

