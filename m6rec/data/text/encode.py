"""Segment tokens for prompt encoding: each distinct prompt segment is tokenized once, with the special tokens the
tokenizer adds around a sequence; `batch_prompts.encode_batch` assembles prompts from them."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase

from m6rec.data.text.render import Templates


class SegmentEncoder:
    """The tokenizer, templates and token budget of a prompt encoding, with a cache of segment → token ids.

    `prefix` / `suffix` are the special tokens the tokenizer adds around a sequence (e.g. [CLS] … [SEP]): added once
    per prompt and counted in `max_length`. The user and the candidate are never cut; the oldest history items are.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, templates: Templates, max_length: int):
        self.tokenizer, self.templates, self.max_length = tokenizer, templates, max_length
        self.cache: dict[str, list[int]] = {}
        bare = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x", add_special_tokens=True)["input_ids"]
        start = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.prefix, self.suffix = full[:start], full[start + len(bare) :]

    def prefetch(self, segments: Iterable[str]) -> None:
        """Tokenize all not-yet-cached segments in one batch call (the fast tokenizer's own, where there is one)."""
        todo = sorted({s for s in segments if s not in self.cache})
        if not todo:
            return
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # without transformers' per-call wrapping
            ids = [e.ids for e in backend.encode_batch(todo, add_special_tokens=False)]
        else:
            ids = self.tokenizer(todo, add_special_tokens=False)["input_ids"]
        self.cache.update(zip(todo, ids, strict=True))

    def ids(self, segment: str) -> list[int]:
        """Token ids of one segment (tokenized alone, no special tokens), cached."""
        if segment not in self.cache:
            self.prefetch([segment])
        return self.cache[segment]
