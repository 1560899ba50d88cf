"""The prompt encoder: token ids of 10⁰–10⁷ prompts at once, oldest history items dropped to fit the token budget.

Each distinct user, candidate and history piece is tokenized once (`SegmentEncoder`'s cache); every prompt is then
assembled from those token spans with numpy, in chunks of samples so memory stays bounded, into one flat `Ragged`
array. A sample whose texts break the segment rules the assembly relies on (a value ending in a space, or an empty
value after a space that is not the prompt's end) is encoded alone by the same rule (`_encode_one`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m6rec.data.protocol.history import RaggedHistory
from m6rec.data.ragged import Ragged, ragged_ranges
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import prompt_layout, prompt_segments

CHUNK_SAMPLES = 2**17  # samples assembled at once: bounds the (samples × history) work arrays


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

    def freeze(self, extra: dict[str, list[int]], dtype: type) -> None:
        """Tokenize every chunk (`extra`: chunks given as token ids, e.g. the special-token prefix)."""
        self.encoder.prefetch(t for t in self.texts if t and t not in extra)
        ids = [extra[t] if t in extra else self.encoder.cache.get(t, []) if t else [] for t in self.texts]
        self.length = np.array([len(x) for x in ids], np.int32)
        self.offset = np.concatenate([[0], np.cumsum(self.length, dtype=np.int64)[:-1]])
        self.flat = np.array([i for x in ids for i in x], dtype)


def _fast_ok(texts: list[str], space_before: bool, last: bool) -> np.ndarray:
    """Values the assembly can place: not ending in a space (it would move to the next segment), and not empty after
    a space unless nothing follows (the space would move on)."""
    return np.array([not t.endswith(" ") and (bool(t) or not space_before or last) for t in texts], bool)


class _Plan:
    """The prompt layout as chunk ids: literals, every distinct value in each form it takes, tokenized once."""

    def __init__(self, encoder: SegmentEncoder, users: list[tuple[str, str]], candidates: list[str], pieces: list[str]):
        t = encoder.templates
        layout = [(kind, v) for lit, fld in prompt_layout(t.prompt) for kind, v in (("lit", lit), ("field", fld)) if v]
        self.always_slow = [v for kind, v in layout if kind == "field"].count("history") != 1
        chunks = self.chunks = _Chunks(encoder)
        self.prefix, self.suffix = chunks.add(["\x00prefix", "\x00suffix"])
        sep = t.history_sep
        self.sep_chunk = chunks.add([sep[:-1] if sep.endswith(" ") else sep])[0]
        later_space = " " if sep.endswith(" ") else ""
        self.columns: list[tuple[str, int]] = []  # the elements around the history: (source, chunk id or column)
        self.user_ok, self.candidate_ok = np.ones(len(users), bool), np.ones(len(candidates), bool)
        self.history_at, first_space, self.forms = 0, "", {}
        for k, (kind, value) in enumerate(layout):
            space = " " if k > 0 and layout[k - 1][0] == "lit" and layout[k - 1][1].endswith(" ") else ""
            last = k == len(layout) - 1
            if kind == "lit":
                text = value[:-1] if value.endswith(" ") and not last else value
                self.columns.append(("lit", int(chunks.add([text])[0])))
            elif value == "history":
                self.history_at, first_space = len(self.columns), space
                self.always_slow |= not _fast_ok([t.empty_history], bool(space), last)[0]
            elif value == "candidate":
                self.forms[len(self.columns)] = chunks.add([space + c for c in candidates])
                self.candidate_ok &= _fast_ok(candidates, bool(space), last)
                self.columns.append(("candidate", len(self.columns)))
            else:
                column = 0 if value == "user" else 1
                self.forms[len(self.columns)] = chunks.add([space + u[column] for u in users])
                self.user_ok &= _fast_ok([u[column] for u in users], bool(space), last)
                self.columns.append(("user", len(self.columns)))
        self.piece_ok = _fast_ok(pieces, bool(first_space), False) & _fast_ok(pieces, bool(later_space), False)
        self.first_form = chunks.add([first_space + p for p in pieces])
        self.later_form = chunks.add([later_space + p for p in pieces])
        self.estimate_form = chunks.add([" " + p for p in pieces])
        self.estimate_sep = chunks.add([sep.rstrip()])[0]
        self.empty_chunk = chunks.add([first_space + t.empty_history])[0]
        dtype = np.uint16 if len(encoder.tokenizer) <= 2**16 else np.int32
        chunks.freeze({"\x00prefix": encoder.prefix, "\x00suffix": encoder.suffix}, dtype)

    def per_sample(self, user_code: np.ndarray, candidate_code: np.ndarray) -> list[np.ndarray]:
        n = len(user_code)
        codes = {"user": user_code, "candidate": candidate_code}
        return [np.full(n, v, np.int32) if kind == "lit" else self.forms[v][codes[kind]] for kind, v in self.columns]


def _budget(
    plan: _Plan, budget: int, fixed: np.ndarray, lengths: np.ndarray, piece_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a chunk of samples (sample j's pieces: piece_code[sum(lengths[:j]) :][: lengths[j]], `fixed` tokens
    outside the history): the oldest kept item, whether the sample fits at all, and its token count."""
    size, n = plan.chunks.length, len(lengths)
    width = int(lengths.max(initial=0))
    sample = np.repeat(np.arange(n), lengths)  # the sample of each history entry
    position = np.arange(len(piece_code)) - (np.cumsum(lengths) - lengths)[sample]

    def padded(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n, width + 1), np.int32)
        out[sample, position] = values
        return out

    # drop an estimated number of the oldest items, then take the first start that fits exactly
    starts = np.arange(width + 1)[None, :]
    later_cost = padded(size[plan.later_form[piece_code]] + size[plan.sep_chunk])
    after = np.cumsum(later_cost[:, ::-1], axis=1)[:, ::-1] - later_cost  # sum over k > s
    del later_cost
    kept_len = padded(size[plan.first_form[piece_code]]) + after  # history tokens when the oldest kept item is s
    del after
    kept_len = np.where(starts == lengths[:, None], size[plan.empty_chunk], kept_len)
    estimate = padded(size[plan.estimate_form[piece_code]] + size[plan.estimate_sep])
    dropped = np.cumsum(estimate, axis=1) - estimate  # estimated tokens saved by starting at s
    del estimate
    excess = fixed + kept_len[:, 0] - budget
    reached = (dropped >= excess[:, None]) | (starts == lengths[:, None])
    first = np.where(excess > 0, np.argmax(reached, axis=1), 0)
    fits = (starts >= first[:, None]) & (starts <= lengths[:, None]) & (fixed[:, None] + kept_len <= budget)
    start, fit = np.argmax(fits, axis=1), fits.any(axis=1)
    count = size[plan.prefix] + size[plan.suffix] + fixed + kept_len[np.arange(n), start]
    return start, fit, count


def _assemble(
    plan: _Plan, per_sample: list[np.ndarray], lengths: np.ndarray, piece_code: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """The token ids of a chunk of samples, back to back, keeping each sample's history from `start` on."""
    size, n = plan.chunks.length, len(lengths)
    kept = lengths - start
    history_chunks = np.where(kept > 0, 2 * kept - 1, 1)
    count = len(per_sample) + 2 + history_chunks
    begin = np.cumsum(count) - count
    stream = np.empty(int(count.sum()), np.int32)  # the chunk ids of every sample, in order
    stream[begin], stream[begin + count - 1] = plan.prefix, plan.suffix
    for k, column in enumerate(per_sample):
        stream[begin + k + 1 + (history_chunks if k >= plan.history_at else 0)] = column
    where = begin + 1 + plan.history_at
    stream[where[kept == 0]] = plan.empty_chunk
    kept_rows = ragged_ranges(np.cumsum(lengths) - lengths + start, kept)
    rank = np.arange(len(kept_rows)) - np.repeat(np.cumsum(kept) - kept, kept)
    slot = where[np.repeat(np.arange(n), kept)] + 2 * rank
    codes = piece_code[kept_rows]
    stream[slot] = np.where(rank == 0, plan.first_form[codes], plan.later_form[codes])
    stream[slot[rank > 0] - 1] = plan.sep_chunk
    return plan.chunks.flat[ragged_ranges(plan.chunks.offset[stream], size[stream])]


def _encode_one(encoder: SegmentEncoder, user_text: str, pronoun: str, history: list[str], candidate: str) -> list[int]:
    """One prompt by the segment rule itself: drop an estimated number of the oldest items, then verify exactly."""
    t = encoder.templates
    budget = encoder.max_length - len(encoder.prefix) - len(encoder.suffix)

    def ids(kept: list[str]) -> list[int]:
        return [i for s in prompt_segments(user_text, pronoun, kept, candidate, t) for i in encoder.ids(s)]

    tokens, first, sep = ids(history), 0, len(encoder.ids(t.history_sep.rstrip()))
    excess = len(tokens) - budget
    while excess > 0 and first < len(history):
        excess -= len(encoder.ids(" " + history[first])) + sep
        first += 1
    for start in range(first, len(history) + 1):
        tokens = ids(history[start:]) if start else tokens
        if len(tokens) <= budget:
            return encoder.prefix + tokens + encoder.suffix
    raise ValueError(
        f"data.max_length={encoder.max_length} is too small: the prompt for candidate {candidate!r} "
        f"needs {len(tokens) + len(encoder.prefix) + len(encoder.suffix)} tokens with no history at all"
    )


def encode_batch(
    encoder: SegmentEncoder,
    users: list[tuple[str, str]],
    user_code: np.ndarray,
    candidates: list[str],
    candidate_code: np.ndarray,
    pieces: list[str],
    history: RaggedHistory,
    piece_code: np.ndarray,
) -> Ragged:
    """Token ids of every sample j = (users[user_code[j]], candidates[candidate_code[j]], history pieces
    `pieces[piece_code[r]]` for r in history.rows[history.offsets[j]:history.offsets[j+1]]), oldest → newest, the
    oldest dropped first to fit `encoder.max_length` (the tokenizer's special tokens included).

    Two passes over chunks of samples: the budget (which items stay, how many tokens), then the tokens, written
    straight into one preallocated flat array."""
    plan, n, lengths = _Plan(encoder, users, candidates, pieces), len(user_code), history.lengths()
    budget = encoder.max_length - len(encoder.prefix) - len(encoder.suffix)
    bounds = [(lo, min(n, lo + CHUNK_SAMPLES)) for lo in range(0, n, CHUNK_SAMPLES)]

    def chunk(lo: int, hi: int) -> tuple[list[np.ndarray], np.ndarray]:
        codes = piece_code[history.rows[history.offsets[lo] : history.offsets[hi]]]
        return plan.per_sample(user_code[lo:hi], candidate_code[lo:hi]), codes

    start, count, alone = np.zeros(n, np.int32), np.zeros(n, np.int32), {}
    for lo, hi in bounds:
        per_sample, codes = chunk(lo, hi)
        fixed = np.sum([plan.chunks.length[c] for c in per_sample], axis=0)
        start[lo:hi], fit, count[lo:hi] = _budget(plan, budget, fixed, lengths[lo:hi], codes)
        ok = plan.user_ok[user_code[lo:hi]] & plan.candidate_ok[candidate_code[lo:hi]] & (not plan.always_slow)
        ok[np.repeat(np.arange(hi - lo), lengths[lo:hi])[~plan.piece_ok[codes]]] = False
        for j in (lo + np.flatnonzero(~ok | ~fit)).tolist():  # rare: texts the assembly cannot place, or an error
            rows = history.rows[history.offsets[j] : history.offsets[j + 1]]
            alone[j] = _encode_one(
                encoder, *users[user_code[j]], [pieces[c] for c in piece_code[rows]], candidates[candidate_code[j]]
            )
            count[j] = len(alone[j])
    offsets = np.concatenate([[0], np.cumsum(count, dtype=np.int64)]).astype(np.int64)
    flat = np.empty(int(offsets[-1]), plan.chunks.flat.dtype)
    is_alone = np.zeros(n, bool)
    is_alone[list(alone)] = True
    for lo, hi in bounds:
        per_sample, codes = chunk(lo, hi)
        fast = ~is_alone[lo:hi] if alone else slice(None)
        if alone:  # only the samples the assembly places (their pieces picked out of the chunk's)
            local = lengths[lo:hi]
            codes = codes[ragged_ranges((np.cumsum(local) - local)[fast], local[fast])]
            per_sample = [column[fast] for column in per_sample]
        tokens = _assemble(plan, per_sample, lengths[lo:hi][fast], codes, start[lo:hi][fast])
        if alone:
            flat[ragged_ranges(offsets[lo:hi][fast], count[lo:hi][fast])] = tokens
        else:
            flat[offsets[lo] : offsets[hi]] = tokens
    for j, ids in alone.items():
        flat[offsets[j] : offsets[j + 1]] = ids
    return Ragged.from_offsets(flat, offsets)


def encode_parts(encoder: SegmentEncoder, parts: Sequence[tuple[str, str, list[str], str]]) -> Ragged:
    """`encode_batch` of prompts given as (user text, pronoun, history pieces, candidate text) tuples."""
    user_ids: dict[tuple[str, str], int] = {}
    candidate_ids: dict[str, int] = {}
    piece_ids: dict[str, int] = {}
    user_code = np.array([user_ids.setdefault((u, p), len(user_ids)) for u, p, _, _ in parts], np.int64)
    candidate_code = np.array([candidate_ids.setdefault(c, len(candidate_ids)) for *_, c in parts], np.int64)
    piece_code = np.array([piece_ids.setdefault(h, len(piece_ids)) for _, _, hs, _ in parts for h in hs], np.int64)
    lengths = np.array([len(hs) for _, _, hs, _ in parts], np.int64)
    history = RaggedHistory(np.concatenate([[0], np.cumsum(lengths)]), np.arange(int(lengths.sum())))
    return encode_batch(
        encoder, list(user_ids), user_code, list(candidate_ids), candidate_code, list(piece_ids), history, piece_code
    )
