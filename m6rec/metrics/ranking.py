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
    target_scores = torch.empty(len(queries), 1, dtype=queries.dtype, device=queries.device)
    starts = range(0, len(items), chunk_size)
    for start in sorted({int(t) // chunk_size * chunk_size for t in targets.tolist()}):
        scores = queries @ items[start : start + chunk_size].T
        inside = (targets >= start) & (targets < start + chunk_size)
        target_scores[inside, 0] = scores[rows[inside], targets[inside] - start]
    above = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    for start in starts:
        scores = queries @ items[start : start + chunk_size].T
        end = start + scores.size(1)
        inside = (targets >= start) & (targets < end)
        scores[rows[inside], targets[inside] - start] = float("nan")  # the target is not ranked against itself
        if excluded is not None:
            hit = (excluded >= start) & (excluded < end)
            scores[rows[:, None].expand_as(excluded)[hit], excluded[hit] - start] = float("nan")
        above += (scores >= target_scores).sum(1)  # NaN compares False: dropped items never count
    return above


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
