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
ESTIMATE_BLOCK = 256  # queries per product that estimates target scores (cost B * block * d)
ESTIMATE_WIDTH = 64  # at least this many columns in it: narrower products ran another BLAS kernel


def chunk_size_for(
    n_queries: int, itemsize: int, memory_budget: int = DEFAULT_MEMORY_BUDGET, device: torch.device | None = None
) -> int:
    """Items per chunk so that one chunk's scores plus two boolean masks fit `memory_budget` bytes (at least 1), per
    intra-op thread on a CPU `device` (threads split a chunk, so each keeps a cache-sized share)."""
    threads = torch.get_num_threads() if device is not None and device.type == "cpu" else 1
    return max(1, memory_budget * threads // (max(n_queries, 1) * (itemsize + 2)))


@torch.no_grad()
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
    excluded. Items are scored one chunk at a time (`chunk_size`, else sized from `memory_budget` bytes per CPU
    thread: `chunk_size_for`), so memory is O(B * chunk) whatever the catalogue size, and each chunk's product is
    computed once.
    Exactness: each query's threshold is its target score from the same BLAS kernel (a block product, diagonal taken;
    with one chunk, the chunk's own score); a chunk counts its items at or above it with one in-place subtraction
    and a sum of sign bits. A query whose threshold is not bit-equal to the score in its target's chunk (another
    kernel, e.g. tiny chunks or a GPU), or with a NaN score, is ranked again by `two_pass_ranks`.
    """
    n_queries, device = len(queries), queries.device
    chunk = chunk_size or chunk_size_for(n_queries, queries.element_size(), memory_budget, device)
    exact = torch.full((n_queries,), float("nan"), dtype=queries.dtype, device=device)
    one_chunk = chunk >= len(items)  # then the chunk's own target scores are the thresholds
    threshold = exact if one_chunk else _target_score_estimates(queries, items, targets)
    cut = None if one_chunk else _without_positive_zero(threshold)[:, None]
    ranks = torch.full((n_queries,), len(items), dtype=torch.int32, device=device)  # minus the items found below
    row_sums = torch.zeros_like(exact)  # NaN once a NaN score was met (its sign bit means nothing)
    target_groups = _group_by_chunk(torch.arange(n_queries, device=device), targets, len(items), chunk)
    dropped_groups = _dropped_by_chunk(targets, excluded, len(items), chunk)
    signed = {2: torch.int16, 4: torch.int32, 8: torch.int64}[queries.element_size()]  # same width: sign bit on top
    width = min(chunk, len(items))  # rows of the scratch an odd multiple of 16 long: other strides ran ~1.5x slower
    scratch = queries.new_empty(n_queries, width + (-width) % 32 + 16)
    for index, start in enumerate(range(0, len(items), chunk)):
        block = items[start : start + chunk]
        scores = torch.mm(queries, block.T, out=scratch[:, : len(block)])
        rows, columns = target_groups[index]
        exact[rows] = scores[rows, columns - start]
        if cut is None:  # one chunk: every target score is exact already
            cut = _without_positive_zero(exact)[:, None]
        rows, columns = dropped_groups[index]
        scores[rows, columns - start] = float("-inf")  # the target and excluded items fall below any threshold
        scores.sub_(cut)  # IEEE subtraction: the sign bit is set exactly where score < threshold
        row_sums += scores.sum(1)
        ranks += scores.view(signed).bitwise_right_shift_(8 * scores.element_size() - 1).sum(1, dtype=torch.int32)
    ranks = ranks.long()
    redo = (exact != threshold) | row_sums.isnan()  # NaN (no exact score) is redone too
    if redo.any():
        rows = redo.nonzero().squeeze(1)
        kept_excluded = None if excluded is None else excluded[rows]
        ranks[rows] = two_pass_ranks(queries[rows], items, targets[rows], kept_excluded, chunk)
    return ranks


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


def _target_score_estimates(queries: Tensor, items: Tensor, targets: Tensor) -> Tensor:
    """Score of item `targets[b]` for query `b`: the diagonal of (block x width >= 64) products, the BLAS kernel of
    the chunk products, so on CPU bit-equal to them (measured for every query, batch >= 2 or chunks >= 16 items)."""
    blocks = []
    for start in range(0, len(queries), ESTIMATE_BLOCK):
        block = targets[start : start + ESTIMATE_BLOCK]
        columns = block.repeat(-(-ESTIMATE_WIDTH // len(block)))[: max(len(block), ESTIMATE_WIDTH)]
        blocks.append((queries[start : start + ESTIMATE_BLOCK] @ items[columns].T).diagonal())
    return torch.cat(blocks) if blocks else queries.new_empty(0)


def _without_positive_zero(threshold: Tensor) -> Tensor:
    """`threshold` with +0 as -0, so that `score - threshold` is -0 (sign bit set) for no score equal to it."""
    return threshold.masked_fill(threshold == 0, -0.0)


def _group_by_chunk(rows: Tensor, columns: Tensor, n_items: int, chunk: int) -> list[tuple[Tensor, Tensor]]:
    """(rows, columns) pairs split by the chunk of `chunk` items their column falls in, one entry per chunk."""
    if chunk >= n_items:
        return [(rows, columns)]
    order = torch.argsort(columns)
    rows, columns = rows[order], columns[order]
    bounds = torch.searchsorted(columns, torch.arange(0, n_items + chunk, chunk, device=columns.device)).tolist()
    return [(rows[a:b], columns[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)][: -(-n_items // chunk)]


def _dropped_by_chunk(
    targets: Tensor, excluded: Tensor | None, n_items: int, chunk: int
) -> list[tuple[Tensor, Tensor]]:
    """(row, item) pairs of each query's target and valid (>= 0) `excluded` entries, grouped by chunk."""
    rows, columns = torch.arange(len(targets), device=targets.device), targets
    if excluded is not None:
        excluded_rows, slots = (excluded >= 0).nonzero(as_tuple=True)
        rows, columns = torch.cat([rows, excluded_rows]), torch.cat([columns, excluded[excluded_rows, slots]])
    return _group_by_chunk(rows, columns, n_items, chunk)


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
