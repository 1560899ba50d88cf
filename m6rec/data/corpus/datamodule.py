"""TextCorpusDataModule: text files and/or a behaviour log's training split → packed token blocks for LM pretraining.

Documents: each non-blank line of a `.txt` file, the `text_field` of each `.jsonl` line, the `text_field` column of a
`.parquet` file, and (with `behaviour`) the texts of training items and one sentence per training interaction.
They are split by document into train/valid (seeded), tokenized in chunks with a separator (eos; [SEP] for WordPiece)
after each, concatenated and cut into `block_size` blocks cached under `<data_dir>/corpus/<fingerprint>/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from filelock import FileLock
from torch.utils.data import DataLoader

from m6rec.data.corpus.documents import BehaviourCorpus, expand_files, read_documents
from m6rec.data.corpus.pack import SPLITS, BlockCollate, BlockDataset, pack_documents, split_mask
from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.resumable import ResumableDataLoader, ResumableShardSampler, split_loader, trainer_world
from m6rec.data.text.tokenizer import load_pretrained_tokenizer, train_tokenizer
from m6rec.utils.files import atomic_dir, write_json_atomic

log = logging.getLogger(__name__)
FORMAT = "corpus-v1"


class TextCorpusDataModule(L.LightningDataModule):
    """Packed LM pretraining blocks; batches are {"input_ids", "attention_mask", "special_tokens_mask"} (no masking).

    `tokenizer`: a pretrained tokenizer's path/name, else one of `tokenizer_type` (bpe | wordpiece) is trained on the
    training documents (every k-th one when `tokenizer_sample_docs` > 0 caps their number). `behaviour`: the keyword
    arguments of a BehaviourLogDataModule (or one built by Hydra) whose training split joins the corpus.
    """

    def __init__(
        self,
        data_dir: str,
        files: Sequence[str] = (),
        text_field: str = "text",
        behaviour: BehaviourLogDataModule | Mapping[str, Any] | None = None,
        tokenizer: str | None = None,
        tokenizer_type: str = "bpe",
        vocab_size: int = 4096,
        tokenizer_sample_docs: int = 0,
        block_size: int = 128,
        valid_fraction: float = 0.05,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
    ):
        super().__init__()
        files = [str(f) for f in files]  # plain containers (not OmegaConf nodes) so checkpoints load weights_only
        if tokenizer_type not in ("bpe", "wordpiece"):
            raise ValueError(f"data.tokenizer_type: {tokenizer_type!r} is not one of ['bpe', 'wordpiece']")
        if block_size < 2:
            raise ValueError(f"data.block_size: need >= 2, got {block_size}")
        if not 0 <= valid_fraction < 1:
            raise ValueError(f"data.valid_fraction: need 0 <= fraction < 1, got {valid_fraction}")
        self.save_hyperparameters(ignore=["behaviour"])
        if isinstance(behaviour, Mapping):
            kwargs = {k: v for k, v in dict(behaviour).items() if k != "_target_"}
            behaviour = BehaviourLogDataModule(**{"data_dir": data_dir, **kwargs})
        self.behaviour = BehaviourCorpus(behaviour) if behaviour is not None else None
        self.datasets: dict[str, BlockDataset] = {}
        self.stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ documents
    @cached_property
    def files(self) -> list[Path]:
        return expand_files(self.hparams.files)

    def documents(self) -> Iterator[str]:
        """Every document in corpus order: the behaviour corpus, then the files in `files` order."""
        derived = self.behaviour.documents() if self.behaviour is not None else iter(())
        from_files = (doc for path in self.files for doc in read_documents(path, self.hparams.text_field))
        return chain(derived, from_files)

    @cached_property
    def source_key(self) -> str:
        """Hash of what decides the documents and their split: files (path, size, mtime), behaviour data, settings."""
        h = hashlib.sha256(FORMAT.encode())
        for path in self.files:
            st = path.stat()
            h.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        h.update(f"behaviour:{self.behaviour.fingerprint if self.behaviour else None}\n".encode())
        hp = self.hparams
        h.update(f"{hp.text_field}|{hp.valid_fraction}|{hp.split_seed}".encode())
        return h.hexdigest()[:16]

    @cached_property
    def is_valid(self) -> np.ndarray:
        """Validation flag of every document (one counting pass over the corpus)."""
        n = sum(1 for _ in self.documents())
        if n == 0:
            raise ValueError("data: the corpus is empty: no document in data.files or data.behaviour")
        return split_mask(n, self.hparams.valid_fraction, self.hparams.split_seed)

    def training_documents(self, max_documents: int = 0) -> Iterator[str]:
        """The training documents; with `max_documents` > 0, every k-th of them so that at most that many come."""
        is_valid = self.is_valid
        stride = -(-int((~is_valid).sum()) // max_documents) if max_documents > 0 else 1
        train_docs = (doc for doc, valid in zip(self.documents(), is_valid, strict=True) if not valid)
        return (doc for k, doc in enumerate(train_docs) if k % stride == 0)

    # ------------------------------------------------------------------ tokenizer
    @cached_property
    def tokenizer(self):
        """The pretrained tokenizer `tokenizer` names; else, when the behaviour log has ID tokens, the log's own
        tokenizer (its metadata BPE + one token per user / item: the vocabulary a model fine-tuned on that log reads);
        else one trained on the training documents (cached by hash)."""
        hp = self.hparams
        if hp.tokenizer:
            return load_pretrained_tokenizer(hp.tokenizer)
        if self.behaviour is not None and self.behaviour.module.hparams.id_tokens:
            if hp.tokenizer_type != "bpe":
                raise ValueError(
                    f"data.tokenizer_type={hp.tokenizer_type}: a behaviour log with id_tokens brings its own BPE "
                    "tokenizer (its ID tokens must keep their ids); use tokenizer_type=bpe"
                )
            return self.behaviour.module.tokenizer
        key = hashlib.sha256(f"{self.source_key}|{hp.tokenizer_sample_docs}".encode()).hexdigest()[:16]
        path = Path(hp.data_dir) / "tokenizers" / f"corpus-{hp.tokenizer_type}-{hp.vocab_size}-{key}"
        return train_tokenizer(
            lambda: self.training_documents(hp.tokenizer_sample_docs), hp.tokenizer_type, hp.vocab_size, path
        )

    @cached_property
    def separator_id(self) -> int:
        """The id appended after every document: eos (a trained WordPiece's eos is [SEP]), else sep."""
        tok = self.tokenizer
        sep = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if sep is None:
            raise ValueError(f"data.tokenizer: {self.hparams.tokenizer} has neither an eos nor a sep token")
        return int(sep)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the sources, the split, the tokenizer (its full definition) and the block size."""
        h = hashlib.sha256(f"{self.source_key}|{self.hparams.block_size}|{self.separator_id}|".encode())
        h.update(self.tokenizer.backend_tokenizer.to_str().encode())
        return h.hexdigest()[:16]

    @property
    def cache_dir(self) -> Path:
        return Path(self.hparams.data_dir) / "corpus" / self.fingerprint

    # ------------------------------------------------------------------ cache
    def prepare_data(self) -> None:
        """Build the block cache once (rank 0 of each node); other ranks wait and read it."""
        self.build_cache()

    def build_cache(self) -> Path:
        """Write {train,valid}.bin + meta.json into a temporary folder and rename it into place, under a file lock;
        reuse an existing cache."""
        path = self.cache_dir
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not (path / "meta.json").exists():
                with atomic_dir(path) as tmp:
                    meta = pack_documents(
                        self.documents(), self.is_valid, self.tokenizer, self.separator_id, self.hparams.block_size, tmp
                    )
                    if meta["train"]["blocks"] == 0:
                        raise ValueError(
                            f"data: the training corpus has {meta['train']['tokens']} tokens, fewer "
                            f"than one block (data.block_size={self.hparams.block_size})"
                        )
                    write_json_atomic(tmp / "meta.json", {**meta, "fingerprint": self.fingerprint})
                log.info("Corpus %s built: %s", self.fingerprint, meta)
        return path

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        path = self.build_cache()
        meta = json.loads((path / "meta.json").read_text())
        for split in SPLITS:
            self.datasets[split] = BlockDataset(
                path / f"{split}.bin", meta["dtype"], meta[split]["blocks"], meta["block_size"]
            )
        self.stats = {
            "fingerprint": self.fingerprint,
            "vocab_size": meta["vocab_size"],
            "block_size": meta["block_size"],
        }
        for split in SPLITS:
            self.stats.update({f"{split}_{k}": v for k, v in meta[split].items()})
        if self.stats["valid_blocks"] == 0 and self.hparams.valid_fraction > 0:
            log.warning("data: the validation documents hold fewer tokens than one block: no validation data")
        log.info("Corpus %s: %s", self.fingerprint, self.stats)

    # ------------------------------------------------------------------ loaders
    def _collate(self) -> BlockCollate:
        return BlockCollate([self.separator_id, *self.tokenizer.all_special_ids])

    def train_dataloader(self) -> ResumableDataLoader:
        world, rank = trainer_world(self.trainer)
        dataset = self.datasets["train"]
        sampler = ResumableShardSampler(dataset, world, rank, shuffle=True, seed=self.hparams.shuffle_seed)
        return ResumableDataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=self._collate(),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation blocks in order, sharded across ranks without padding (exact DDP perplexity)."""
        hp = self.hparams
        return split_loader(
            self.datasets["valid"],
            False,
            self.trainer,
            hp.batch_size,
            hp.eval_batch_size,
            hp.num_workers,
            self._collate(),
        )

    def test_dataloader(self) -> DataLoader:
        """The validation blocks (a text corpus has no separate test split)."""
        return self.val_dataloader()
