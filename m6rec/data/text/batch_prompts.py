"""Vectorised prompt encoding: the token ids `SegmentEncoder.encode` gives each sample, for 10⁵–10⁶ samples at once.

Histories are ragged arrays (`RaggedHistory`); each distinct user, candidate and history piece is rendered and
tokenized once, then every prompt is assembled and budgeted with numpy. A sample whose texts break the segment rules
the fast path relies on (an empty value, or one ending in a space) is encoded by `SegmentEncoder.encode` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import prompt_layout


@dataclass
class RaggedHistory:
    """Sample j's history is `rows[offsets[j]:offsets[j + 1]]` (oldest → newest), rows of the frame it came from."""

    offsets: np.ndarray
    rows: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def as_lists(self, items: np.ndarray, ratings: np.ndarray) -> list[list[tuple[int, float]]]:
        """The `recent_training_history` form: [(item, rating), …] per sample."""
        pairs = list(zip(items[self.rows].tolist(), ratings[self.rows].tolist(), strict=True))
        return [pairs[a:b] for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True)]


def ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of range(starts[j], starts[j] + lengths[j]) over j (int32 while the values fit)."""
    total = int(lengths.sum())
    dtype = np.int32 if max(total, int(starts.max(initial=0)) + int(lengths.max(initial=0))) < 2**31 else np.int64
    shift = (starts - (np.cumsum(lengths) - lengths)).astype(dtype)
    out = np.repeat(shift, lengths)
    out += np.arange(total, dtype=dtype)
    return out


def recent_training_rows(interactions: pd.DataFrame, is_train: np.ndarray, max_len: int) -> RaggedHistory:
    """`recent_training_history` as ragged rows: per row, the user's training rows strictly earlier in time, ordered
    by (time, item, row), the newest `max_len` of them."""
    n = len(interactions)
    if max_len <= 0 or n == 0:
        return RaggedHistory(np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    users = pd.factorize(interactions["user_id"].to_numpy())[0].astype(np.int64)
    times = np.unique(interactions["timestamp"].to_numpy(), return_inverse=True)[1].astype(np.int64).ravel()
    items = interactions["item_id"].to_numpy()
    train = np.flatnonzero(is_train)
    order = train[np.lexsort((items[train], times[train], users[train]))]
    span = int(times.max()) + 1
    keys = users * span + times
    sorted_keys = keys[order]
    end = np.searchsorted(sorted_keys, keys, side="left")  # first training row of the user at or after the time
    first = np.searchsorted(sorted_keys, users * span, side="left")
    start = np.maximum(first, end - max_len)
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return RaggedHistory(offsets, order[ragged_ranges(start, lengths)].astype(np.int64))


class _Chunks:
    """Distinct segment texts → chunk ids, with their token ids laid out in one flat array."""

    def __init__(self, encoder: SegmentEncoder):
        self.encoder, self.ids, self.texts = encoder, {}, []

    def add(self, texts: list[str]) -> np.ndarray:
        out = np.empty(len(texts), np.int32)
        for k, text in enumerate(texts):
            out[k] = self.ids.setdefault(text, len(self.ids))
            if out[k] == len(self.texts):
                self.texts.append(text)
        return out

    def freeze(self, extra: dict[str, list[int]]) -> None:
        """Tokenize every chunk (`extra`: chunks given as token ids, e.g. the special-token prefix)."""
        todo = sorted({t for t in self.texts if t and t not in extra and t not in self.encoder.cache})
        backend = getattr(self.encoder.tokenizer, "backend_tokenizer", None)
        if backend is not None and todo:  # the fast tokenizer's own batch call, without transformers' wrapping
            encoded = backend.encode_batch(todo, add_special_tokens=False)
            self.encoder.cache.update(zip(todo, (e.ids for e in encoded), strict=True))
        self.encoder.prefetch(todo)
        ids = [extra[t] if t in extra else self.encoder.cache.get(t, []) if t else [] for t in self.texts]
        self.length = np.array([len(x) for x in ids], np.int32)
        self.offset = np.concatenate([[0], np.cumsum(self.length, dtype=np.int64)[:-1]])
        self.offset = self.offset.astype(np.int32 if self.offset[-1] < 2**31 else np.int64)
        self.flat = np.array([i for x in ids for i in x], np.int32)


def _fast_ok(texts: list[str]) -> np.ndarray:
    """Values the fast path can place: non-empty, not ending in a space (which would move to the next segment)."""
    return np.array([bool(t) and not t.endswith(" ") for t in texts], bool)


def encode_batch(
    encoder: SegmentEncoder,
    users: list[tuple[str, str]],
    user_code: np.ndarray,
    candidates: list[str],
    candidate_code: np.ndarray,
    pieces: list[str],
    history: RaggedHistory,
    piece_code: np.ndarray,
) -> list[np.ndarray]:
    """Token ids of every sample j = (users[user_code[j]], candidates[candidate_code[j]], the pieces
    `piece_code[history.offsets[j]:history.offsets[j+1]]`), equal to `encoder.encode` of each."""
    t, n = encoder.templates, len(user_code)
    if n == 0:
        return []
    layout = [(kind, v) for lit, field in prompt_layout(t.prompt) for kind, v in (("lit", lit), ("field", field)) if v]
    fields = [v for kind, v in layout if kind == "field"]
    ok = np.ones(n, bool)
    if fields.count("history") != 1 or not _fast_ok([t.empty_history])[0]:
        ok[:] = False
    ok &= _fast_ok([u for u, _ in users])[user_code] & _fast_ok([p for _, p in users])[user_code]
    ok &= _fast_ok(candidates)[candidate_code]
    lengths = history.lengths()
    sample = np.repeat(np.arange(n), lengths)  # the sample of each history entry
    ok &= np.bincount(sample, weights=~_fast_ok(pieces)[piece_code], minlength=n) == 0

    chunks = _Chunks(encoder)
    prefix, suffix = chunks.add(["\x00prefix", "\x00suffix"])
    sep = t.history_sep
    sep_chunk = chunks.add([sep[:-1] if sep.endswith(" ") else sep])[0]
    later_space = " " if sep.endswith(" ") else ""
    per_sample: list[np.ndarray] = []  # chunk ids of the elements around the history, in order
    history_at, first_space = 0, ""
    for k, (kind, value) in enumerate(layout):
        before_space = k > 0 and layout[k - 1][0] == "lit" and layout[k - 1][1].endswith(" ")
        space = " " if before_space else ""
        if kind == "lit":
            text = value[:-1] if value.endswith(" ") and k < len(layout) - 1 else value
            per_sample.append(np.full(n, chunks.add([text])[0]))
        elif value == "history":
            history_at, first_space = len(per_sample), space
        elif value == "candidate":
            per_sample.append(chunks.add([space + c for c in candidates])[candidate_code])
        else:
            column = 0 if value == "user" else 1
            per_sample.append(chunks.add([space + u[column] for u in users])[user_code])
    first_form = chunks.add([first_space + p for p in pieces])
    later_form = chunks.add([later_space + p for p in pieces])
    estimate_form = chunks.add([" " + p for p in pieces])
    estimate_sep = chunks.add([sep.rstrip()])[0]
    empty_chunk = chunks.add([first_space + t.empty_history])[0]
    chunks.freeze({"\x00prefix": encoder.prefix, "\x00suffix": encoder.suffix})
    size = chunks.length

    # ---- budget: the same choice as SegmentEncoder.encode (estimate, then the first start that fits)
    width = int(lengths.max(initial=0))
    budget = encoder.max_length - len(encoder.prefix) - len(encoder.suffix)
    fixed = np.sum([size[c] for c in per_sample], axis=0) if per_sample else np.zeros(n, np.int64)
    position = np.arange(len(piece_code)) - np.repeat(history.offsets[:-1], lengths)

    def padded(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n, width + 1), np.int32)
        out[sample, position] = values
        return out

    first_len, later_len = padded(size[first_form[piece_code]]), padded(size[later_form[piece_code]])
    later_cost = np.where(np.arange(width + 1) < lengths[:, None], later_len + size[sep_chunk], 0)
    after = np.cumsum(later_cost[:, ::-1], axis=1)[:, ::-1] - later_cost  # sum over k > s
    kept_len = first_len + after  # history tokens when the oldest kept item is s
    starts = np.arange(width + 1)[None, :]
    kept_len = np.where(starts == lengths[:, None], size[empty_chunk], kept_len)
    estimate = padded(size[estimate_form[piece_code]] + size[estimate_sep])
    dropped = np.cumsum(estimate, axis=1) - estimate  # estimated tokens saved by starting at s
    excess = fixed + kept_len[:, 0] - budget
    reached = (dropped >= excess[:, None]) | (starts == lengths[:, None])
    first = np.where(excess > 0, np.argmax(reached, axis=1), 0)
    fits = (starts >= first[:, None]) & (starts <= lengths[:, None]) & (fixed[:, None] + kept_len <= budget)
    start = np.argmax(fits, axis=1)
    ok_fit = fits.any(axis=1)

    # ---- assemble: chunk stream per sample, then the tokens of each chunk
    kept = lengths - start
    history_chunks = np.where(kept > 0, 2 * kept - 1, 1)
    count = len(per_sample) + 2 + history_chunks
    begin = np.cumsum(count) - count
    stream = np.empty(int(count.sum()), np.int32)
    stream[begin] = prefix
    stream[begin + count - 1] = suffix
    for k, column in enumerate(per_sample):
        shift = k + 1 + (history_chunks if k >= history_at else 0)
        stream[begin + shift] = column
    where = begin + 1 + history_at
    stream[where[kept == 0]] = empty_chunk
    kept_rows = ragged_ranges(history.offsets[:-1] + start, kept)
    rank = np.arange(len(kept_rows)) - np.repeat(np.cumsum(kept) - kept, kept)
    owner = np.repeat(np.arange(n), kept)
    slot = where[owner] + 2 * rank
    codes = piece_code[kept_rows]
    stream[slot] = np.where(rank == 0, first_form[codes], later_form[codes])
    stream[slot[rank > 0] - 1] = sep_chunk
    tokens = chunks.flat[ragged_ranges(chunks.offset[stream], size[stream])]
    bounds = np.concatenate([[0], np.cumsum(np.add.reduceat(size[stream], begin), dtype=np.int64)]).tolist()
    out = [tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    for j in np.flatnonzero(~ok | ~ok_fit):  # rare: texts the fast path cannot place, or a budget error to raise
        rows = history.offsets[j], history.offsets[j + 1]
        out[j] = encoder.encode(*users[user_code[j]], [pieces[c] for c in piece_code[rows[0] : rows[1]]],
                                candidates[candidate_code[j]])  # fmt: skip
    return out
