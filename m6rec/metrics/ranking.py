"""Exact full-catalogue ranking: the rank of each query's target among all items, and HR/NDCG/MRR@k from it.

Rank (0-based) = number of non-excluded items scored strictly higher than the target + number of other non-excluded
items scored equal to it: ties are broken pessimistically, so a constant scorer never gets a lucky hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def target_ranks(
    queries: Tensor, items: Tensor, targets: Tensor, excluded: Tensor | None = None, chunk_size: int = 8192
) -> Tensor:
    """0-based rank of item `targets[b]` for query `b` under dot-product scores `queries @ items.T`.

    `excluded` (B, K) holds item indices to leave out of query b's ranking (-1 = padding); the target itself is never
    excluded. Items are scored `chunk_size` at a time, so memory is O(B * chunk_size) whatever the catalogue size.
    The target's own score comes from the same chunked product as every other score, so equal items tie exactly.
    """
    rows = torch.arange(len(queries), device=queries.device)
    own_scores = target_scores(queries, items, targets, chunk_size)[:, None]
    above = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    for start in range(0, len(items), chunk_size):
        scores = queries @ items[start : start + chunk_size].T
        end = start + scores.size(1)
        inside = (targets >= start) & (targets < end)
        scores[rows[inside], targets[inside] - start] = float("nan")  # the target is not ranked against itself
        if excluded is not None:
            hit = (excluded >= start) & (excluded < end)
            scores[rows[:, None].expand_as(excluded)[hit], excluded[hit] - start] = float("nan")
        above += (scores >= own_scores).sum(1)  # NaN compares False: dropped items never count
    return above


def target_scores(queries: Tensor, items: Tensor, targets: Tensor, chunk_size: int = 8192) -> Tensor:
    """Score of item `targets[b]` for query `b`, from the same `chunk_size`-chunked product as `target_ranks`."""
    rows = torch.arange(len(queries), device=queries.device)
    out = torch.empty(len(queries), dtype=queries.dtype, device=queries.device)
    for start in sorted({int(t) // chunk_size * chunk_size for t in targets.tolist()}):
        scores = queries @ items[start : start + chunk_size].T
        inside = (targets >= start) & (targets < start + chunk_size)
        out[inside] = scores[rows[inside], targets[inside] - start]
    return out


def top_k_items(
    queries: Tensor, items: Tensor, k: int, excluded: Tensor | None = None, chunk_size: int = 8192
) -> tuple[Tensor, Tensor]:
    """Per query the `k` best item indices and their scores (B, k), best first, equal scores by lower index; items in
    `excluded` (as in `target_ranks`) score -inf, so they come last, only when fewer than `k` others exist."""
    rows = torch.arange(len(queries), device=queries.device)
    best = torch.empty(len(queries), 0, dtype=queries.dtype, device=queries.device)
    best_index = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for start in range(0, len(items), chunk_size):
        scores = queries @ items[start : start + chunk_size].T
        if excluded is not None:
            hit = (excluded >= start) & (excluded < start + scores.size(1))
            scores[rows[:, None].expand_as(excluded)[hit], excluded[hit] - start] = float("-inf")
        index = torch.arange(start, start + scores.size(1), device=queries.device).expand_as(scores)
        order = torch.sort(torch.cat([best, scores], 1), dim=1, descending=True, stable=True).indices[:, :k]
        best = torch.cat([best, scores], 1).gather(1, order)
        best_index = torch.cat([best_index, index], 1).gather(1, order)
    return best_index, best


def ranking_values(ranks: Tensor, ks: Sequence[int] = (10, 20)) -> dict[str, Tensor]:
    """Mean hr@k (target in the top k), ndcg@k (1 / log2(rank + 2) inside the top k) and mrr@k (1 / (rank + 1)
    inside the top k) over queries with one relevant item each."""
    ranks = ranks.double()
    out: dict[str, Tensor] = {}
    for k in ks:
        inside = ranks < k
        out[f"hr@{k}"] = inside.double().mean()
        out[f"ndcg@{k}"] = torch.where(inside, 1.0 / torch.log2(ranks + 2.0), 0.0).mean()
        out[f"mrr@{k}"] = torch.where(inside, 1.0 / (ranks + 1.0), 0.0).mean()
    return out


class RankingMetrics(Metric):
    """Collects target ranks (one per query, a `cat` state, so DDP gathers every rank's queries exactly once) and
    computes `ranking_values` over all of them."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (10, 20), **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)
        self.add_state("ranks", default=[], dist_reduce_fx="cat")

    def update(self, ranks: Tensor) -> None:
        self.ranks.append(ranks.detach().long())

    def compute(self) -> dict[str, Tensor]:
        empty = isinstance(self.ranks, list) and not self.ranks  # after a DDP sync the state is one tensor
        ranks = torch.empty(0, dtype=torch.long) if empty else dim_zero_cat(self.ranks)
        return {name: value.float() for name, value in ranking_values(ranks, self.ks).items()}
