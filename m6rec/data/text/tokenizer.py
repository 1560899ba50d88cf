"""Tokenizers: a pretrained one from any HF path/name, a byte-level BPE trained on item/user metadata, or a byte-level
BPE / BERT-style WordPiece trained on a text corpus (`train_tokenizer`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from m6rec.data.text.render import Templates, render_history_items, render_item_text, render_prompt, render_user_text
from m6rec.utils.files import atomic_dir

PAD, EOS = "<pad>", "<|endoftext|>"
BPE_MASK = "<mask>"
WORDPIECE_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def metadata_texts(items: list[dict], users: list[dict], templates: Templates) -> list[str]:
    """The BPE training corpus: item texts, history pieces at ratings 1-5, user texts, the prompt's own words.
    Metadata only: no interaction can reach the vocabulary."""
    texts = [render_item_text(row, templates) for row in items]
    texts += [text for row in items for text in render_history_items(row, range(1, 6), templates)]
    texts += [render_user_text(row, templates) for row in users]
    return texts + [render_prompt("", p, [], "", templates) for p in ("he", "she", "they")]


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
    path = Path(cache_dir) / f"bpe-{vocab_size}-{_texts_key('bpe', vocab_size, texts)}"

    def build() -> PreTrainedTokenizerFast:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[PAD, EOS],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=EOS)

    return _cached_tokenizer(path, build)


def _texts_key(kind: str, vocab_size: int, texts: list[str]) -> str:
    """A short hash of the tokenizer kind, size and training texts: the cache folder's name."""
    h = hashlib.sha256(f"{kind}-v1|{vocab_size}".encode())
    for text in texts:
        h.update(text.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def _cached_tokenizer(path: Path, build: Callable[[], PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    """Load the tokenizer saved in `path`, building and saving it first (FileLock + atomic_dir) when absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / "tokenizer.json").exists():
            fast = build()
            with atomic_dir(path) as tmp:
                fast.save_pretrained(tmp)
    fast = PreTrainedTokenizerFast.from_pretrained(path)
    fast.padding_side = "right"
    return fast


def train_tokenizer(
    texts: Callable[[], Iterable[str]], kind: str, vocab_size: int, path: str | Path
) -> PreTrainedTokenizerFast:
    """Train a `kind` tokenizer on the stream `texts()` into folder `path` unless it is there (FileLock + atomic_dir).

    "bpe": byte-level BPE with <pad>, <|endoftext|> (eos/bos) and <mask>; decode(encode(x)) == x.
    "wordpiece": BERT-style (lower-cased) with [PAD] [UNK] [CLS] [SEP] [MASK]; [SEP] is also the eos token.
    """
    if kind not in ("bpe", "wordpiece"):
        raise ValueError(f"data.tokenizer_type: {kind!r} is not one of ['bpe', 'wordpiece']")
    train = _train_bpe if kind == "bpe" else _train_wordpiece
    return _cached_tokenizer(Path(path), lambda: train(texts(), vocab_size))


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, cache_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train (or reuse from `cache_dir`, keyed by a hash of texts + size) a BERT-style WordPiece tokenizer."""
    texts = list(texts)
    path = Path(cache_dir) / f"wordpiece-{vocab_size}-{_texts_key('wordpiece', vocab_size, texts)}"
    return train_tokenizer(lambda: texts, "wordpiece", vocab_size, path)


def _train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, BPE_MASK],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        mask_token=BPE_MASK,
        clean_up_tokenization_spaces=False,
    )


def _train_wordpiece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(WORDPIECE_SPECIALS.values()), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = WORDPIECE_SPECIALS["cls_token"], WORDPIECE_SPECIALS["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=sep, bos_token=cls, **WORDPIECE_SPECIALS)
