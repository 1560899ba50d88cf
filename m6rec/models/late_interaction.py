"""M6-Rec late interaction (Cui et al. 2022, §3.4): the lower GPT-2 blocks read each text segment alone, so a segment's
states depend only on its own text and are computed once per distinct segment (user attributes, history item,
candidate) and cached; per request only the top `layers_online` blocks read the concatenation, then a linear head.

    A 49-year-old male writer rated | Toy Story (5/5) | GoldenEye (3/5) | . Will he enjoy | Kolya (1996), Comedy | ?
    context                         | history         | history         | context         | candidate            | ctx.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

import torch
from torch import nn

from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import Templates, prompt_segments

CONTEXT, HISTORY, CANDIDATE = 0, 1, 2  # segment roles (index of the learned role embedding)
Segment: TypeAlias = tuple[int, tuple[int, ...]]  # (role, token ids)


def late_segments(
    user_text: str, pronoun: str, history: list[str], candidate_text: str, t: Templates
) -> list[tuple[int, str]]:
    """The prompt of `prompt_segments` as (role, text): each history item and the candidate alone, the user text and
    template literals around them merged into CONTEXT segments; separators between two history items are dropped."""
    pending_history, candidate_seen = list(history), False
    segments: list[tuple[int, str]] = []
    context: list[str] = []
    for text in prompt_segments(user_text, pronoun, history, candidate_text, t):
        bare = text.removeprefix(" ")
        if pending_history and bare == pending_history[0]:
            role = HISTORY
            pending_history.pop(0)
        elif not candidate_seen and bare == candidate_text:
            role, candidate_seen = CANDIDATE, True
        else:
            context.append(text)
            continue
        if context and not (role == HISTORY and segments and segments[-1][0] == HISTORY):
            segments.append((CONTEXT, "".join(context)))
        context = []
        segments.append((role, text))
    if context:
        segments.append((CONTEXT, "".join(context)))
    return segments


def tokenize_late(
    parts: Sequence[tuple[str, str, list[str], str]], encoder: SegmentEncoder, max_length: int
) -> list[list[Segment]]:
    """Token ids of each sample's late segments (`parts` as BehaviourLogDataModule.sample_parts gives them); the oldest
    history items are dropped until the sample fits `max_length` tokens (user and candidate never cut)."""
    texts = [late_segments(*part, encoder.templates) for part in parts]
    encoder.prefetch(text for sample in texts for _, text in sample)
    samples = []
    for sample in texts:
        segments = [(role, tuple(encoder.cache[text])) for role, text in sample]
        total = sum(len(ids) for _, ids in segments)
        while total > max_length and any(role == HISTORY for role, _ in segments):
            oldest = next(k for k, (role, _) in enumerate(segments) if role == HISTORY)
            total -= len(segments.pop(oldest)[1])
        if total > max_length:
            raise ValueError(f"data.max_length={max_length} is too small: a sample needs {total} tokens, no history")
        samples.append(segments)
    return samples


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean (…, query, key) permission → additive float mask (0 where allowed, dtype-min elsewhere)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class LateInteractionScorer(nn.Module):
    """GPT-2 split in two: lower L − `layers_online` blocks per segment (positions restart at 0), top `layers_online`
    blocks over the causal concatenation of segment states + learned role and segment-index embeddings; last token
    → linear head → one logit per sample."""

    def __init__(self, backbone: nn.Module, layers_online: int, max_segments: int = 32, num_roles: int = 3):
        super().__init__()
        depth = len(backbone.h)
        if not 1 <= layers_online <= depth:
            raise ValueError(
                f"task.layers_online: expected 1..{depth} (model.backbone.config.n_layer), got {layers_online}"
            )
        self.backbone, self.layers_online, self.max_segments = backbone, layers_online, max_segments
        hidden_size, std = backbone.config.hidden_size, backbone.config.initializer_range
        self.role_embedding = nn.Embedding(num_roles, hidden_size)
        self.segment_embedding = nn.Embedding(max_segments, hidden_size)
        nn.init.normal_(self.role_embedding.weight, std=std)
        nn.init.normal_(self.segment_embedding.weight, std=std)
        self.head = nn.Linear(hidden_size, 1)

    @property
    def lower_blocks(self) -> Sequence[nn.Module]:
        return self.backbone.h[: len(self.backbone.h) - self.layers_online]

    @property
    def top_blocks(self) -> Sequence[nn.Module]:
        return self.backbone.h[len(self.backbone.h) - self.layers_online :]

    @staticmethod
    def _run(blocks: Iterable[nn.Module], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            hidden = block(hidden, None, mask)
        return hidden

    def encode_segment(self, ids: torch.Tensor) -> torch.Tensor:
        """(length,) token ids → (length, hidden) states after the lower blocks, the segment read alone."""
        return self.encode_segments([ids])[0]

    def encode_segments(self, segments: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """`encode_segment` of each segment; segments of equal length share one batch (no padding)."""
        by_length: dict[int, list[int]] = {}
        for k, ids in enumerate(segments):
            if len(ids) == 0:
                raise ValueError("LateInteractionScorer.encode_segments: empty segment")
            by_length.setdefault(len(ids), []).append(k)
        out: list[torch.Tensor] = [torch.empty(0)] * len(segments)
        wte, wpe = self.backbone.wte, self.backbone.wpe
        for length, indices in by_length.items():
            ids = torch.stack([torch.as_tensor(segments[k], device=wte.weight.device) for k in indices])
            positions = torch.arange(length, device=ids.device)
            hidden = self.backbone.drop(wte(ids) + wpe(positions))
            causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
            hidden = self._run(self.lower_blocks, hidden, _additive_mask(causal, hidden.dtype)[None, None])
            for k, states in zip(indices, hidden, strict=True):
                out[k] = states
        return out

    def score(self, samples_states: Sequence[Sequence[torch.Tensor]], roles: Sequence[Sequence[int]]) -> torch.Tensor:
        """One logit per sample from its segments' lower states (in prompt order) and roles: concatenation + role and
        segment-index embeddings, right-padded, top blocks (causal, padding masked), last real token, head."""
        counts = [len(states) for states in samples_states]
        if max(counts) > self.max_segments:
            raise ValueError(
                f"a sample has {max(counts)} segments, more than the {self.max_segments} learned segment "
                "positions (max_segments): lower data.history_len"
            )
        flat = [s for states in samples_states for s in states]
        device = flat[0].device
        lengths = torch.tensor([len(s) for s in flat], device=device)
        role_ids = torch.tensor([r for sample_roles in roles for r in sample_roles], device=device)
        segment_ids = torch.cat([torch.arange(n, device=device) for n in counts])
        sample_ids = torch.arange(len(counts), device=device).repeat_interleave(torch.tensor(counts, device=device))
        extra = self.role_embedding(role_ids) + self.segment_embedding(segment_ids)  # (segments, hidden)
        values = torch.cat(flat) + torch.repeat_interleave(extra, lengths, dim=0)
        rows = torch.repeat_interleave(sample_ids, lengths)
        sample_lengths = torch.zeros(len(counts), dtype=torch.long, device=device).index_add_(0, sample_ids, lengths)
        starts = torch.cumsum(sample_lengths, 0) - sample_lengths
        cols = torch.arange(len(values), device=device) - starts[rows]
        width = int(sample_lengths.max())
        hidden = values.new_zeros(len(counts), width, values.size(-1)).index_put((rows, cols), values)
        valid = torch.arange(width, device=device)[None] < sample_lengths[:, None]  # (batch, key)
        allowed = torch.ones(width, width, dtype=torch.bool, device=device).tril()[None] & valid[:, None, :]
        hidden = self._run(self.top_blocks, hidden, _additive_mask(allowed, hidden.dtype)[:, None])
        last = self.backbone.ln_f(hidden[torch.arange(len(counts), device=device), sample_lengths - 1])
        return self.head(last).squeeze(-1)

    def forward(self, samples: Sequence[Sequence[Segment]]) -> torch.Tensor:
        """Uncached (training) path: encode each distinct segment of the batch once, then `score`."""
        distinct: dict[tuple[int, ...], int] = {}
        for sample in samples:
            for _, ids in sample:
                distinct.setdefault(tuple(ids), len(distinct))
        device = self.backbone.wte.weight.device
        states = self.encode_segments([torch.tensor(ids, device=device) for ids in distinct])
        return self.score(
            [[states[distinct[tuple(ids)]] for _, ids in sample] for sample in samples],
            [[role for role, _ in sample] for sample in samples],
        )


class SegmentStateCache:
    """Lower-block states of each distinct segment (keyed by its token ids), computed offline once and reused by every
    request; rebuild after the model's weights change."""

    def __init__(self, model: LateInteractionScorer, chunk_size: int = 1024):
        self.model, self.chunk_size = model, chunk_size
        self.states: dict[tuple[int, ...], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.states)

    @torch.inference_mode()
    def add(self, segments: Iterable[tuple[int, ...]]) -> int:
        """Encode the segments not cached yet (in chunks); returns how many were added."""
        todo = list(dict.fromkeys(tuple(ids) for ids in segments if tuple(ids) not in self.states))
        device = self.model.backbone.wte.weight.device
        for start in range(0, len(todo), self.chunk_size):
            chunk = todo[start : start + self.chunk_size]
            encoded = self.model.encode_segments([torch.tensor(ids, device=device) for ids in chunk])
            self.states.update(zip(chunk, encoded, strict=True))
        return len(todo)

    def score(self, samples: Sequence[Sequence[Segment]]) -> torch.Tensor:
        """Logits from cached lower states only (every segment must be cached): concatenation + top blocks."""
        try:
            states = [[self.states[ids] for _, ids in sample] for sample in samples]
        except KeyError as err:
            raise KeyError(f"SegmentStateCache.score: segment {err.args[0]} not cached; call add() first") from None
        return self.model.score(states, [[role for role, _ in sample] for sample in samples])
