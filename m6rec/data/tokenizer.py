"""Tokenizers: a pretrained one from any HF path/name, or a byte-level BPE trained on item/user metadata."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from m6rec.utils.files import atomic_dir

PAD, EOS = "<pad>", "<|endoftext|>"


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer of a pretrained backbone (local folder or hub name); adds a pad token if it has none."""
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, cache_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train (or reuse from `cache_dir`, keyed by a hash of texts + size) a byte-level BPE tokenizer."""
    texts = list(texts)
    h = hashlib.sha256(f"bpe-v1|{vocab_size}".encode())
    for text in texts:
        h.update(text.encode("utf-8") + b"\0")
    path = Path(cache_dir) / f"bpe-{vocab_size}-{h.hexdigest()[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / "tokenizer.json").exists():
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            )  # fmt: skip
            tok.train_from_iterator(texts, trainer=trainer)
            fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=EOS)
            with atomic_dir(path) as tmp:
                fast.save_pretrained(tmp)
    fast = PreTrainedTokenizerFast.from_pretrained(path)
    fast.padding_side = "right"
    return fast
