"""Ranking with several relevant items per query (protocol P3: a user, all of the user's held-out items relevant).

Ranks come from `target_ranks` (exact, pessimistic ties): each relevant item is ranked with the query's other
relevant items left out, which counts the non-relevant items scored at least as high; adding its position among the
query's relevant items (ordered by that count) gives its rank in the full list, with every tie against a
non-relevant item broken against it. With one relevant item per query this is exactly `target_ranks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from m6rec.metrics.ranking import target_ranks


def all_target_ranks(
    queries: Tensor, items: Tensor, targets: Tensor, excluded: Tensor, chunk_size: int = 8192
) -> Tensor:
    """0-based rank (B, T) of every relevant item `targets[b, t]` (item column, -1 = padding) in query b's full list
    under scores `queries @ items.T`, items in `excluded` (B, K; -1 = padding) left out; padding gets -1."""
    batch, width = targets.shape
    real = targets >= 0
    rows = torch.arange(batch, device=targets.device).repeat_interleave(width)[real.flatten()]
    others = targets[rows]  # each pair's query's relevant items …
    others = torch.where(others == targets[real][:, None], -1, others)  # … but itself
    pair_excluded = torch.cat([excluded[rows], others], dim=1)
    below = target_ranks(queries[rows], items, targets[real], pair_excluded, chunk_size)  # non-relevant above it
    ranks = torch.full((batch, width), -1, dtype=torch.long, device=targets.device)
    ranks[real] = below
    order = torch.where(real, ranks, torch.iinfo(torch.long).max).argsort(dim=1, stable=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(width, device=targets.device).expand(batch, width).contiguous())
    return torch.where(real, ranks + position, -1)


def all_relevant_values(ranks: Tensor, ks: Sequence[int] = (10, 20)) -> dict[str, Tensor]:
    """Per query (row of `ranks`, -1 = padding): hr@k (a relevant item in the top k), recall@k (share of the relevant
    items in the top k), ndcg@k (DCG over the relevant items in the top k / the ideal DCG of min(n, k) items) and
    mrr@k (1 / (best rank + 1) inside the top k); each a (B,) tensor."""
    real = ranks >= 0
    n_relevant = real.sum(1).double()
    gain = torch.where(real, 1.0 / torch.log2(ranks.double() + 2.0), 0.0)
    best = torch.where(real, ranks, torch.iinfo(torch.long).max).min(1).values.double()
    discounts = 1.0 / torch.log2(torch.arange(max(ks), device=ranks.device, dtype=torch.float64) + 2.0)
    out: dict[str, Tensor] = {}
    for k in ks:
        inside = real & (ranks < k)
        ideal = torch.cumsum(discounts[:k], 0)[(n_relevant.clamp(1, k) - 1).long()]
        out[f"hr@{k}"] = inside.any(1).double()
        out[f"recall@{k}"] = inside.sum(1) / n_relevant.clamp_min(1)
        out[f"ndcg@{k}"] = torch.where(inside, gain, 0.0).sum(1) / ideal
        out[f"mrr@{k}"] = torch.where(best < k, 1.0 / (best + 1.0), 0.0)
    return out


class AllRelevantRankingMetrics(Metric):
    """Mean over queries of `all_relevant_values`; per-query values are a `cat` state, so DDP averages every
    query exactly once whatever the number of relevant items per query."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (10, 20), **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)
        self.names = [f"{m}@{k}" for k in self.ks for m in ("hr", "recall", "ndcg", "mrr")]
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, ranks: Tensor) -> None:
        """`ranks` (B, T): `all_target_ranks`' output, -1 = padding; every row needs one relevant item."""
        if not bool((ranks >= 0).any(1).all()):
            raise ValueError("AllRelevantRankingMetrics: a query without a relevant item")
        values = all_relevant_values(ranks.detach(), self.ks)
        self.values.append(torch.stack([values[name] for name in self.names], dim=1))

    def compute(self) -> dict[str, Tensor]:
        empty = isinstance(self.values, list) and not self.values
        values = torch.zeros(0, len(self.names), dtype=torch.float64) if empty else dim_zero_cat(self.values)
        return {name: values[:, j].mean().float() for j, name in enumerate(self.names)}
