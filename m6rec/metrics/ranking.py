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

DEFAULT_MEMORY_BUDGET = 8 * 2**20  # bytes of (queries × chunk) scratch per call: cache-sized chunks ran fastest on CPU
MAX_NEAR_TIES = 64  # per query: scores this close to the target are kept and compared exactly; more → exact fallback


def chunk_size_for(n_queries: int, itemsize: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Items per chunk so that one chunk's scores plus two boolean masks fit `memory_budget` bytes (at least 1)."""
    return max(1, memory_budget // (max(n_queries, 1) * (itemsize + 2)))


def target_ranks(
    queries: Tensor,
    items: Tensor,
    targets: Tensor,
    excluded: Tensor | None = None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tensor:
    """0-based rank of item `targets[b]` for query `b` under dot-product scores `queries @ items.T`, in one pass.

    `excluded` (B, K) holds item indices to leave out of query b's ranking (-1 = padding); the target itself is never
    excluded. Items are scored one chunk at a time (`chunk_size`, else sized from `memory_budget` bytes), so memory
    is O(B * chunk) whatever the catalogue size, and each chunk's product is computed once.
    Exactness: an estimate t~ of each target score and a rounding bound e are known up front; items above t~ + e are
    counted, items within [t~ - e, t~ + e] are kept and compared with the target's score taken from its own chunk's
    product (so equal items tie exactly). A query whose exact score falls outside the bound, or with more than
    MAX_NEAR_TIES near ties, is ranked again by `two_pass_ranks`.
    """
    n_queries, device = len(queries), queries.device
    chunk = chunk_size or chunk_size_for(n_queries, queries.element_size(), memory_budget)
    estimate, margin = _target_score_bounds(queries, items, targets)
    low, high = (estimate - margin)[:, None], (estimate + margin)[:, None]
    exact = torch.full_like(estimate, float("nan"))
    above = torch.zeros(n_queries, dtype=torch.int32, device=device)
    near = torch.zeros(n_queries, dtype=torch.int32, device=device)
    near_rows, near_scores = [], []
    target_groups = _group_by_chunk(torch.arange(n_queries, device=device), targets, len(items), chunk)
    excluded_groups = _excluded_by_chunk(excluded, len(items), chunk, device)
    for index, start in enumerate(range(0, len(items), chunk)):
        scores = queries @ items[start : start + chunk].T
        rows, columns = target_groups[index]
        exact[rows] = scores[rows, columns - start]
        scores[rows, columns - start] = float("nan")  # the target is not ranked against itself
        rows, columns = excluded_groups[index]
        scores[rows, columns - start] = float("nan")  # NaN compares False: dropped items never count
        above_high = (scores > high).sum(1, dtype=torch.int32)  # an int32 sum of a bool mask is ~4x an int64 one
        in_band = (scores >= low).sum(1, dtype=torch.int32) - above_high
        above += above_high
        near += in_band
        band_rows = ((in_band > 0) & (near <= MAX_NEAR_TIES)).nonzero().squeeze(1)
        if len(band_rows):  # usually a few rows: keep their near-tie scores for the exact comparison
            band = scores[band_rows]
            hit_rows, hit_columns = ((band >= low[band_rows]) & (band <= high[band_rows])).nonzero(as_tuple=True)
            near_rows.append(band_rows[hit_rows])
            near_scores.append(band[hit_rows, hit_columns])
    if near_rows:
        rows, values = torch.cat(near_rows), torch.cat(near_scores)
        above.index_add_(0, rows, (values >= exact[rows]).int())
    redo = ~((exact - estimate).abs() <= margin) | (near > MAX_NEAR_TIES)  # NaN (no exact score) is redone too
    above = above.long()
    if redo.any():
        rows = redo.nonzero().squeeze(1)
        kept_excluded = None if excluded is None else excluded[rows]
        above[rows] = two_pass_ranks(queries[rows], items, targets[rows], kept_excluded, chunk)
    return above


def two_pass_ranks(
    queries: Tensor, items: Tensor, targets: Tensor, excluded: Tensor | None = None, chunk_size: int = 8192
) -> Tensor:
    """`target_ranks` by a simple reference: one pass takes the target scores from their chunks' products, a second
    pass recomputes every chunk and counts the items scored at or above them (exact, about twice the work)."""
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


def _target_score_bounds(queries: Tensor, items: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Each target score computed directly (t~) and a margin 4 * eps * sum|q_k x_k|: BLAS roundings of the same dot
    product were measured within 1.7 eps * sum|q_k x_k| of t~ (d = 64..768); one outside the margin is re-ranked."""
    products = queries * items[targets]
    return products.sum(-1), 4 * torch.finfo(queries.dtype).eps * products.abs().sum(-1)


def _group_by_chunk(rows: Tensor, columns: Tensor, n_items: int, chunk: int) -> list[tuple[Tensor, Tensor]]:
    """(rows, columns) pairs split by the chunk of `chunk` items their column falls in, one entry per chunk."""
    if chunk >= n_items:
        return [(rows, columns)]
    order = torch.argsort(columns)
    rows, columns = rows[order], columns[order]
    bounds = torch.searchsorted(columns, torch.arange(0, n_items + chunk, chunk, device=columns.device)).tolist()
    return [(rows[a:b], columns[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)][: -(-n_items // chunk)]


def _excluded_by_chunk(
    excluded: Tensor | None, n_items: int, chunk: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """The valid (>= 0) entries of `excluded` as (row, item) pairs grouped by chunk (empty groups without it)."""
    if excluded is None:
        excluded = torch.empty(0, 0, dtype=torch.long, device=device)
    rows, slots = (excluded >= 0).nonzero(as_tuple=True)
    return _group_by_chunk(rows, excluded[rows, slots], n_items, chunk)


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
