"""Tests for m6rec.data.protocol.sampling: k-core filtering and negative sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from m6rec.data.protocol.sampling import k_core, sample_negatives


def _frame(pairs: list[tuple[int, int]], start_ts: int = 100) -> pd.DataFrame:
    """Interactions frame in the canonical dtypes from (user_id, item_id) pairs; timestamps count up from start_ts."""
    users, items = zip(*pairs, strict=True) if pairs else ((), ())
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "rating": np.full(len(pairs), 4.0, dtype=np.float32),
            "timestamp": np.arange(start_ts, start_ts + len(pairs), dtype=np.int64),
        }
    )


# ----------------------------------------------------------------------------------------------------- k_core
def test_k_core_cascades_over_two_iterations() -> None:
    # Item 30 has one interaction: dropping it leaves user 3 with one, so user 3 goes on the second pass.
    df = _frame([(1, 10), (3, 10), (2, 20), (3, 30), (1, 20), (2, 10)])
    df.index = [50, 51, 52, 53, 54, 55]
    out = k_core(df, user_k=2, item_k=2)
    assert list(zip(out["user_id"], out["item_id"], strict=True)) == [(1, 10), (2, 20), (1, 20), (2, 10)]
    assert out["timestamp"].tolist() == [100, 102, 104, 105]
    assert out.index.tolist() == [0, 1, 2, 3]
    assert out.dtypes.to_dict() == df.dtypes.to_dict()


def test_k_core_user_only_and_item_only() -> None:
    df = _frame([(1, 10), (1, 20), (2, 10), (3, 10), (3, 20)])
    assert k_core(df, user_k=2, item_k=0)["user_id"].tolist() == [1, 1, 3, 3]
    assert k_core(df, user_k=0, item_k=3)["item_id"].tolist() == [10, 10, 10]


def test_k_core_k_le_1_is_noop() -> None:
    df = _frame([(1, 10), (2, 20), (3, 30)])
    df.index = [7, 8, 9]
    for uk, ik in [(1, 1), (0, 0), (1, 0)]:
        out = k_core(df, uk, ik)
        pd.testing.assert_frame_equal(out, df.reset_index(drop=True))


def test_k_core_errors() -> None:
    df = _frame([(1, 10), (2, 20)])
    empty = r"^data\.k_core: no interactions left after filtering \(users >= 2, items >= 1\)$"
    with pytest.raises(ValueError, match=empty):
        k_core(df, user_k=2, item_k=1)
    with pytest.raises(ValueError, match=r"^data\.k_core: "):
        k_core(df, user_k=-1, item_k=2)
    with pytest.raises(ValueError, match=r"^data\.k_core: "):
        k_core(df, user_k=2, item_k=-3)
    with pytest.raises(ValueError, match=r"^data\.k_core: interactions lack columns \['item_id'\]"):
        k_core(df.drop(columns="item_id"), user_k=2, item_k=2)


# ----------------------------------------------------------------------------------------------- negatives
def _random_log(n: int, n_users: int, n_items: int, seed: int) -> pd.DataFrame:
    """Random implicit log of n rows (user ids from 1, item ids from 1000)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, n_users + 1, n).astype(np.int64),
            "item_id": rng.integers(1000, 1000 + n_items, n).astype(np.int64),
            "rating": np.ones(n, dtype=np.float32),
            "timestamp": rng.integers(0, 10**9, n).astype(np.int64),
        }
    )


def test_negatives_avoid_positives_and_exclude() -> None:
    train = _random_log(2000, n_users=30, n_items=40, seed=1)
    held_out = _random_log(300, n_users=30, n_items=45, seed=2)  # also adds items 1040..1044 to the catalogue
    neg = sample_negatives(train, 3, seed=5, exclude=held_out)
    keys = lambda f: set(zip(f["user_id"].tolist(), f["item_id"].tolist(), strict=True))  # noqa: E731
    assert not keys(neg) & (keys(train) | keys(held_out))
    assert set(neg["item_id"]) <= set(train["item_id"]) | set(held_out["item_id"])
    assert set(neg["item_id"]) & set(range(1040, 1045))  # exclude-only items are in the uniform catalogue


def test_negatives_shape_columns_and_copies() -> None:
    train = _frame([(1, 10), (1, 20), (2, 30), (3, 10)], start_ts=500)
    neg = sample_negatives(train, 4, seed=0)
    assert list(neg.columns) == ["user_id", "item_id", "rating", "timestamp", "label"]
    assert len(neg) == 16
    assert neg["user_id"].tolist() == [1] * 8 + [2] * 4 + [3] * 4
    assert neg["timestamp"].tolist() == [500] * 4 + [501] * 4 + [502] * 4 + [503] * 4
    assert (neg["rating"] == 0.0).all() and (neg["label"] == 0.0).all()
    assert neg.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64", "float32"]
    assert set(neg.loc[neg["user_id"] == 1, "item_id"]) == {30}  # the only item user 1 lacks
    assert set(neg.loc[neg["user_id"] == 2, "item_id"]) <= {10, 20}
    assert set(neg.loc[neg["user_id"] == 3, "item_id"]) <= {20, 30}
    assert len(sample_negatives(train, 0)) == 0


def test_negatives_deterministic_per_seed() -> None:
    train = _random_log(1000, n_users=20, n_items=50, seed=3)
    for strategy in ("uniform", "popularity"):
        a = sample_negatives(train, 2, strategy=strategy, seed=11)
        pd.testing.assert_frame_equal(a, sample_negatives(train, 2, strategy=strategy, seed=11))
        assert not a["item_id"].equals(sample_negatives(train, 2, strategy=strategy, seed=12)["item_id"])


def test_popularity_strategy_follows_counts() -> None:
    # Popularity: item 1 -> 1, 2 -> 1, 3 -> 2, 4 -> 3, 5 -> 4. User 0 has item 1, so it may get 2..5 at 1:2:3:4.
    pairs = [(0, 1), (10, 2), (10, 3), (11, 3), (10, 4), (11, 4), (12, 4), (10, 5), (11, 5), (12, 5), (13, 5)]
    neg = sample_negatives(_frame(pairs), 50_000, strategy="popularity", seed=0)
    got = neg.loc[neg["user_id"] == 0, "item_id"].value_counts(normalize=True).sort_index()
    assert got.index.tolist() == [2, 3, 4, 5]
    np.testing.assert_allclose(got.to_numpy(), [0.1, 0.2, 0.3, 0.4], atol=0.02)
    # Exclude-only items have popularity 0: never drawn; user 10 (items 2..5) only ever gets item 1.
    neg = sample_negatives(_frame(pairs), 200, strategy="popularity", seed=0, exclude=_frame([(99, 6)]))
    assert 6 not in set(neg["item_id"])
    assert set(neg.loc[neg["user_id"] == 10, "item_id"]) == {1}


def test_uniform_strategy_is_flat() -> None:
    # Catalogue 1..10 (item 10 only via exclude); user 0 has item 1, item 2 held out -> 8 allowed items at 1/8 each.
    train = _frame([(0, 1), (5, 3), (5, 3), (5, 3), (6, 4), (6, 5)])
    exclude = _frame([(0, 2), (7, 6), (7, 7), (7, 8), (7, 9), (7, 10)])
    neg = sample_negatives(train, 50_000, strategy="uniform", seed=3, exclude=exclude)
    got = neg.loc[neg["user_id"] == 0, "item_id"].value_counts(normalize=True).sort_index()
    assert got.index.tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    np.testing.assert_allclose(got.to_numpy(), np.full(8, 1 / 8), atol=0.02)


def test_near_saturated_user_gets_its_one_allowed_item() -> None:
    # User 0 has 299 of 300 items: almost every draw collides, so the exact fallback finishes it.
    pairs = [(0, i) for i in range(1, 300)] + [(1, 300)]
    neg = sample_negatives(_frame(pairs), 2, seed=0)
    assert set(neg.loc[neg["user_id"] == 0, "item_id"]) == {300}
    assert (neg["user_id"] == 0).sum() == 2 * 299
    assert not (neg.loc[neg["user_id"] == 1, "item_id"] == 300).any()


def test_negatives_errors() -> None:
    train = _frame([(0, 1), (0, 2), (1, 1)])
    with pytest.raises(ValueError, match=r"^data\.negatives: user 0 has interacted with every item"):
        sample_negatives(train, 1)
    with pytest.raises(ValueError, match=r"^data\.negatives: user 1 "):
        sample_negatives(_frame([(0, 1), (1, 1), (0, 3)]), 1, exclude=_frame([(1, 2), (1, 3)]))
    with pytest.raises(ValueError, match=r"^data\.negatives: user 1 "):  # only popular-0 items left for user 1
        sample_negatives(_frame([(0, 2), (1, 1), (1, 2)]), 1, strategy="popularity", exclude=_frame([(0, 3)]))
    with pytest.raises(ValueError, match=r"^data\.negatives\.strategy: unknown strategy 'bogus'"):
        sample_negatives(_frame([(0, 1), (1, 2)]), 1, strategy="bogus")
    with pytest.raises(ValueError, match=r"^data\.negatives: n_per_positive"):
        sample_negatives(_frame([(0, 1), (1, 2)]), -1)


def test_negatives_speed_sanity() -> None:
    train = _random_log(100_000, n_users=900, n_items=1700, seed=7)
    neg = sample_negatives(train, 4, strategy="popularity", seed=1)
    assert len(neg) == 400_000
    neg = sample_negatives(train, 4, strategy="uniform", seed=1)
    forbidden = set(zip(train["user_id"].tolist(), train["item_id"].tolist(), strict=True))
    assert not forbidden & set(zip(neg["user_id"].tolist(), neg["item_id"].tolist(), strict=True))
