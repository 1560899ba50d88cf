"""Token ids for rendered prompts: each distinct segment is tokenized once, prompts are budgeted exactly."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from transformers import PreTrainedTokenizerBase

from m6rec.data.text.render import Templates, prompt_segments


class SegmentEncoder:
    """Encode prompts segment by segment with a cache; drop the oldest history items to fit `max_length`.

    The special tokens the tokenizer adds around a sequence (e.g. [CLS] … [SEP]) are added once per prompt
    and counted in the budget. The user and the candidate are never cut.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, templates: Templates, max_length: int):
        self.tokenizer, self.templates, self.max_length = tokenizer, templates, max_length
        self.cache: dict[str, list[int]] = {}
        bare = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x", add_special_tokens=True)["input_ids"]
        start = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.prefix, self.suffix = full[:start], full[start + len(bare) :]

    def prefetch(self, segments: Iterable[str]) -> None:
        """Tokenize all not-yet-cached segments in one batch call."""
        todo = sorted({s for s in segments if s not in self.cache})
        if todo:
            ids = self.tokenizer(todo, add_special_tokens=False)["input_ids"]
            self.cache.update(zip(todo, ids, strict=True))

    def _ids(self, segment: str) -> list[int]:
        if segment not in self.cache:
            self.prefetch([segment])
        return self.cache[segment]

    def _join(self, segments: list[str]) -> list[int]:
        return [i for s in segments for i in self._ids(s)]

    def encode(self, user_text: str, pronoun: str, history: list[str], candidate_text: str) -> np.ndarray:
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        ids = self._join(prompt_segments(user_text, pronoun, history, candidate_text, self.templates))
        first, excess = 0, len(ids) - budget
        sep = len(self._ids(self.templates.history_sep.rstrip()))
        while excess > 0 and first < len(history):  # estimate how many of the oldest items must go …
            excess -= len(self._ids(" " + history[first])) + sep
            first += 1
        for start in range(first, len(history) + 1):  # … then verify exactly, dropping more if needed
            if start:
                ids = self._join(prompt_segments(user_text, pronoun, history[start:], candidate_text, self.templates))
            if len(ids) <= budget:
                return np.asarray(self.prefix + ids + self.suffix, dtype=np.int32)
        raise ValueError(
            f"data.max_length={self.max_length} is too small: the prompt for candidate {candidate_text!r} "
            f"needs {len(ids) + len(self.prefix) + len(self.suffix)} tokens with no history at all"
        )
