"""Exact full-catalogue ranking: hand-computed values, agreement with torchmetrics, chunking, ties, state merging."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG

from m6rec.metrics import ranking
from m6rec.metrics.ranking import (
    RankingMetrics,
    chunk_size_for,
    ranking_values,
    target_ranks,
    target_scores,
    top_k_items,
    two_pass_ranks,
)


def test_two_users_five_items_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [0.4, 0.4, 0.2, 0.8, 0.1]])
    targets = torch.tensor([2, 0])
    excluded = torch.tensor([[1], [-1]])  # user 0 has seen item 1 (the top score): it is not ranked
    ranks = target_ranks(scores, torch.eye(5), targets, excluded, chunk_size=2)  # identity items: scores as given
    # user 0: only item 4 (0.7) is above 0.5 → rank 1; user 1: item 3 above, item 1 tied (pessimistic) → rank 2
    assert ranks.tolist() == [1, 2]
    assert target_ranks(scores, torch.eye(5), targets).tolist() == [2, 2]  # without the exclusion item 1 counts
    values = ranking_values(ranks, ks=(1, 3))
    assert values["hr@1"] == 0.0 and values["hr@3"] == 1.0
    assert values["ndcg@3"].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)
    assert values["mrr@3"].item() == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert values["ndcg@1"] == 0.0 and values["mrr@1"] == 0.0


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_top_k_items_and_target_scores_by_hand(chunk_size: int):
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [0.4, 0.4, 0.2, 0.8, 0.1]])
    excluded = torch.tensor([[1], [-1]])
    top, top_scores = top_k_items(scores, torch.eye(5), 3, excluded, chunk_size)
    # user 0 without item 1: 4 (0.7), 2 (0.5), 3 (0.3); user 1: 3 (0.8), then the tie 0 / 1 by lower index
    assert top.tolist() == [[4, 2, 3], [3, 0, 1]]
    assert torch.equal(top_scores, torch.tensor([[0.7, 0.5, 0.3], [0.8, 0.4, 0.4]]))
    top, top_scores = top_k_items(scores, torch.eye(5), 5, excluded, chunk_size)  # user 0 has only 4 unmasked items
    assert top[0].tolist() == [4, 2, 3, 0, 1] and top_scores[0, -1] == float("-inf")
    assert torch.equal(target_scores(scores, torch.eye(5), torch.tensor([2, 0]), chunk_size), torch.tensor([0.5, 0.4]))


@pytest.mark.parametrize("chunk_size", [1, 4, 23, 1000])
def test_agrees_with_torchmetrics_on_a_random_case(chunk_size: int):
    g = torch.Generator().manual_seed(0)
    n_users, n_items = 9, 23
    queries, items = torch.randn(n_users, 6, generator=g), torch.randn(n_items, 6, generator=g)
    targets = torch.randint(n_items, (n_users,), generator=g)
    excluded = torch.full((n_users, 5), -1)
    for u in range(n_users):  # 0-5 seen items per user, never the target
        seen = [i for i in torch.randperm(n_items, generator=g)[:5].tolist() if i != targets[u]][: u % 6]
        excluded[u, : len(seen)] = torch.tensor(seen, dtype=torch.long)
    ranks = target_ranks(queries, items, targets, excluded, chunk_size=chunk_size)
    scores = queries @ items.T
    preds, target, indexes = [], [], []
    for u in range(n_users):
        kept = [i for i in range(n_items) if i not in excluded[u].tolist()]
        preds.append(scores[u, kept])
        target.append(torch.tensor(kept) == targets[u])
        indexes.append(torch.full((len(kept),), u))
    preds, target, indexes = torch.cat(preds), torch.cat(target), torch.cat(indexes)
    ours = ranking_values(ranks, ks=(1, 5, 10))
    for k in (1, 5, 10):
        for name, metric in (("hr", RetrievalHitRate), ("ndcg", RetrievalNormalizedDCG), ("mrr", RetrievalMRR)):
            expected = metric(top_k=k)(preds, target, indexes=indexes)
            assert ours[f"{name}@{k}"].item() == pytest.approx(expected.item(), abs=1e-6), (name, k)
    assert 0 < ours["hr@5"] < 1  # the case is not degenerate


def test_an_identical_item_ties_pessimistically_in_any_chunk():
    items = torch.tensor([[1.0, 2.0], [0.3, 0.1], [1.0, 2.0], [-1.0, 0.5]])  # items 0 and 2 are the same text
    queries = torch.tensor([[0.7, 0.2], [0.7, 0.2]])
    for chunk_size in (1, 2, 3, 4):
        ranks = target_ranks(queries, items, torch.tensor([0, 2]), chunk_size=chunk_size)
        assert ranks.tolist() == [1, 1]


def test_metric_state_collects_every_rank_once():
    metric = RankingMetrics(ks=(2,))
    metric.update(torch.tensor([0, 3]))
    metric.update(torch.tensor([1]))
    values = metric.compute()
    assert values["hr@2"].item() == pytest.approx(2 / 3)
    assert values["ndcg@2"].item() == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert values["mrr@2"].item() == pytest.approx((1 + 1 / 2) / 3)


def test_metric_computes_after_a_ddp_style_sync():
    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:  # what all_gather gives rank 0 of two
        return [tensor, torch.tensor([1])]

    rank0 = RankingMetrics(ks=(2,), dist_sync_fn=gather, distributed_available_fn=lambda: True)
    rank0.update(torch.tensor([0, 3]))
    synced = rank0.compute()  # the list state becomes one gathered tensor
    expected = ranking_values(torch.tensor([0, 3, 1]), ks=(2,))
    assert {k: round(v.item(), 6) for k, v in synced.items()} == {k: round(v.item(), 6) for k, v in expected.items()}


def _tied_case(seed: int, n_users: int = 40, n_items: int = 301) -> tuple[torch.Tensor, ...]:
    """Random queries over a catalogue with exact duplicates (every 7th item repeats item 0..) and seen items."""
    g = torch.Generator().manual_seed(seed)
    queries, items = torch.randn(n_users, 16, generator=g), torch.randn(n_items, 16, generator=g)
    items[::7] = items[: len(items[::7])].clone()  # duplicates: ties that must break pessimistically
    targets = torch.randint(n_items, (n_users,), generator=g)
    excluded = torch.randint(-1, n_items, (n_users, 12), generator=g)
    excluded[excluded == targets[:, None]] = -1
    return queries, items, targets, excluded


@pytest.mark.parametrize("chunk_size", [1, 5, 64, 301, 5000])
def test_one_pass_equals_the_two_pass_reference(chunk_size: int):
    queries, items, targets, excluded = _tied_case(chunk_size)
    expected = two_pass_ranks(queries, items, targets, excluded, chunk_size=chunk_size)
    assert torch.equal(target_ranks(queries, items, targets, excluded, chunk_size=chunk_size), expected)
    without_excluded = target_ranks(queries, items, targets, chunk_size=chunk_size)
    assert torch.equal(without_excluded, two_pass_ranks(queries, items, targets, chunk_size=chunk_size))
    assert expected.float().std() > 0  # not degenerate


def test_a_wrong_target_estimate_falls_back_and_stays_exact(monkeypatch):
    queries, items, targets, excluded = _tied_case(1)
    expected = two_pass_ranks(queries, items, targets, excluded, chunk_size=50)
    true_estimates = ranking._target_score_estimates

    def one_ulp_off(*args):  # every threshold one float above the exact score: all must be re-ranked
        estimate = true_estimates(*args)
        return torch.nextafter(estimate, torch.full_like(estimate, math.inf))

    monkeypatch.setattr(ranking, "_target_score_estimates", one_ulp_off)
    assert torch.equal(target_ranks(queries, items, targets, excluded, chunk_size=50), expected)


def _no_fallback(monkeypatch) -> None:
    """Make the exact fallback fail the test: the one-pass count alone must be right."""

    def fail(*args, **kwargs):
        raise AssertionError("two_pass_ranks fallback was used")

    monkeypatch.setattr(ranking, "two_pass_ranks", fail)


def _integer_case(seed: int, n_users: int = 30, n_items: int = 40) -> tuple[torch.Tensor, ...]:
    """Small-integer embeddings (every score exact in any summation order, many exact ties), targets in every chunk
    of up to 40 items, and seen items."""
    g = torch.Generator().manual_seed(seed)
    queries = torch.randint(-3, 4, (n_users, 8), generator=g).float()
    items = torch.randint(-3, 4, (n_items, 8), generator=g).float()
    targets = torch.arange(n_users) * n_items // n_users  # spread over the catalogue: every chunk holds a target
    excluded = torch.randint(-1, n_items, (n_users, 6), generator=g)
    excluded[excluded == targets[:, None]] = -1
    return queries, items, targets, excluded


def _count_by_hand(queries, items, targets, excluded) -> list[int]:
    """Per query: other, non-excluded items scored >= the target (scores are exact integers here)."""
    scores = (queries @ items.T).tolist()
    ranks = []
    for row, target in enumerate(targets.tolist()):
        dropped = set(excluded[row].tolist()) | {target}
        ranks.append(sum(s >= scores[row][target] for i, s in enumerate(scores[row]) if i not in dropped))
    return ranks


@pytest.mark.parametrize(
    ("chunk_size", "dtype"),
    [
        (1, torch.float32),
        (2, torch.float32),
        (3, torch.float32),
        (7, torch.float32),
        (40, torch.float32),
        (7, torch.float64),
        (7, torch.bfloat16),
        (40, torch.bfloat16),
    ],
)
def test_one_pass_counts_exact_ties_and_excluded_items_in_every_chunk(chunk_size: int, dtype, monkeypatch):
    queries, items, targets, excluded = (x.to(dtype) if x.is_floating_point() else x for x in _integer_case(chunk_size))
    expected = _count_by_hand(queries, items, targets, excluded)
    _no_fallback(monkeypatch)  # exact integer scores: every estimate equals its chunk's score bit for bit
    assert target_ranks(queries, items, targets, excluded, chunk_size=chunk_size).tolist() == expected
    assert target_ranks(queries, items, targets, chunk_size=chunk_size).tolist() == _count_by_hand(
        queries, items, targets, torch.full((len(queries), 1), -1)
    )
    assert len(set(expected)) > 5  # not degenerate


@pytest.mark.parametrize("chunk_size", [1, 2, 6])
def test_near_ties_one_float_apart_and_signed_zeros(chunk_size: int, monkeypatch):
    t = torch.tensor(0.3)
    up, down = torch.nextafter(t, torch.tensor(1.0)).item(), torch.nextafter(t, torch.tensor(0.0)).item()
    # 1-d items: the scores are the values themselves (query 1.0) or their negations (query -1.0)
    items = torch.tensor([[0.3], [up], [down], [0.3], [0.0], [-0.0]])
    queries = torch.tensor([[1.0], [1.0], [1.0], [-1.0]])
    targets = torch.tensor([0, 4, 5, 4])
    _no_fallback(monkeypatch)
    ranks = target_ranks(queries, items, targets, torch.tensor([[3], [-1], [-1], [-1]]), chunk_size=chunk_size)
    # query 0: up above, item 3 (a tie) excluded, down below → 1; queries 1 and 2: +0 and -0 tie (pessimistic) under
    # all four positive items → 5; query 3 (scores negated): the other zero ties, no positive item is above → 1
    assert ranks.tolist() == [1, 5, 5, 1]
    assert target_ranks(queries, items, targets, chunk_size=chunk_size)[0].item() == 2  # the tie counts when kept


def test_a_nan_item_score_is_ranked_by_the_reference():
    queries, items, targets, excluded = _integer_case(0)
    items[5, 2] = float("nan")  # item 5 scores NaN for every query: never counted, as in `two_pass_ranks`
    targets[targets == 5] = 6
    expected = two_pass_ranks(queries, items, targets, excluded, chunk_size=4)
    assert torch.equal(target_ranks(queries, items, targets, excluded, chunk_size=4), expected)
    assert expected.tolist() == _count_by_hand(queries, items, targets, excluded)  # NaN >= s is False


def test_a_constant_scorer_ranks_last():
    items = torch.ones(300, 4)  # every item scores the same: all tie with the target
    excluded = torch.tensor([[3, 7, -1], [-1, -1, -1]])
    ranks = target_ranks(torch.ones(2, 4), items, torch.tensor([5, 299]), excluded, chunk_size=32)
    assert ranks.tolist() == [297, 299]  # all other non-excluded items tie → pessimistic rank = their count


def test_chunk_size_follows_the_memory_budget():
    assert chunk_size_for(256, 4, memory_budget=256 * 6 * 1000) == 1000  # float32 scores + two bool masks
    assert chunk_size_for(10**6, 4, memory_budget=1) == 1
    threads = torch.get_num_threads()  # on a CPU the budget is per intra-op thread
    assert chunk_size_for(256, 4, 256 * 6 * 1000, torch.device("cpu")) == 1000 * threads
    queries, items, targets, excluded = _tied_case(3)
    tiny = target_ranks(queries, items, targets, excluded, memory_budget=40 * 6 * 7)  # 7 items per chunk and thread
    assert torch.equal(tiny, two_pass_ranks(queries, items, targets, excluded, chunk_size=7 * threads))
