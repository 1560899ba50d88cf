"""Splitters: exact codes on hand-made logs, leakage-free boundaries, and one-line config errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from m6rec.data.protocol.splits import (
    SPLITTERS,
    TEST,
    TRAIN,
    VALID,
    cold_item_split,
    kept_train_rows,
    leave_one_out_split,
    random_split,
    split_interactions,
    temporal_split,
)

RATIO_ERROR = r"^data\.split_ratios: need three non-negative numbers summing to 1, got "


def frame(user: list[int], item: list[int], ts: list[int]) -> pd.DataFrame:
    """An interactions frame with the real dtypes."""
    return pd.DataFrame(
        {
            "user_id": np.asarray(user, dtype=np.int64),
            "item_id": np.asarray(item, dtype=np.int64),
            "rating": np.full(len(user), 4.0, dtype=np.float32),
            "timestamp": np.asarray(ts, dtype=np.int64),
        }
    )


def random_frame(n: int, n_users: int, n_items: int, n_times: int, seed: int = 0) -> pd.DataFrame:
    """`n` draws of (user, item, timestamp), one row per distinct (user, item) pair, few timestamps (many ties)."""
    rng = np.random.default_rng(seed)
    df = frame(rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(0, n_times, n))
    return df.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)


# ---------------------------------------------------------------- leave one out
def test_loo_exact_codes_with_time_tie_and_short_users():
    df = frame(
        user=[1, 3, 1, 2, 1, 3, 1],
        item=[11, 20, 10, 10, 13, 21, 12],
        ts=[300, 50, 100, 999, 300, 40, 200],
    )
    # user 1 in order: 10@100, 12@200, 11@300, 13@300 (tie broken by item) -> 13 TEST, 11 VALID
    # user 2 has one interaction -> TRAIN; user 3 has two -> 21@40 TRAIN, 20@50 TEST
    split = leave_one_out_split(df)
    assert split.dtype == np.int8
    assert split.tolist() == [VALID, TEST, TRAIN, TRAIN, TEST, TRAIN, TRAIN]


def test_loo_full_tie_is_broken_by_row_position():
    df = frame(user=[7, 7, 7], item=[5, 5, 5], ts=[10, 10, 10])
    assert leave_one_out_split(df).tolist() == [TRAIN, VALID, TEST]


def test_loo_item_rule_ignores_row_order():
    df = random_frame(3000, n_users=200, n_items=300, n_times=20)
    split = leave_one_out_split(df, tie_break="item")
    sizes = df.groupby("user_id").size()
    assert (split == TEST).sum() == (sizes >= 2).sum() and (split == VALID).sum() == (sizes >= 3).sum()
    shuffled = df.sample(frac=1.0, random_state=1)
    assert not (shuffled.index.to_numpy() == np.arange(len(df))).all()
    reshuffled = pd.Series(leave_one_out_split(shuffled, "item"), index=shuffled.index).sort_index()
    assert (reshuffled.to_numpy() == split).all()  # same index = same (user, item) pair


SAME_SECOND = dict(user=[1, 1, 1, 1, 2, 2], item=[30, 20, 10, 15, 6, 5], ts=[100, 100, 50, 100, 10, 10])


@pytest.mark.parametrize(
    ("rule", "seed", "expected"),
    [
        # user 1: 10@50 first, then the same-second rows 0, 1, 3 in file order -> row 3 TEST, row 1 VALID;
        # user 2: rows 4, 5 in the same second -> row 5 TEST
        ("row", 0, [TRAIN, VALID, TRAIN, TEST, TRAIN, TEST]),
        # by item id: 15 (row 3) < 20 (row 1) < 30 (row 0) -> row 0 TEST, row 1 VALID; user 2: item 6 (row 4) TEST
        ("item", 0, [TEST, VALID, TRAIN, TRAIN, TEST, TRAIN]),
        # default_rng(0).permutation(6) = [3 2 5 4 0 1] ranks rows 1 < 0 < 3 and 4 < 5 -> row 3 TEST, row 0 VALID
        ("random", 0, [VALID, TRAIN, TRAIN, TEST, TRAIN, TEST]),
        # default_rng(3).permutation(6) = [2 5 4 1 3 0] ranks rows 3 < 0 < 1 and 5 < 4 -> row 1 TEST, row 0 VALID
        ("random", 3, [VALID, TEST, TRAIN, TRAIN, TEST, TRAIN]),
    ],
)
def test_loo_tie_rules_on_same_second_interactions(rule: str, seed: int, expected: list[int]):
    df = frame(**SAME_SECOND)
    assert leave_one_out_split(df, rule, seed).tolist() == expected
    assert split_interactions(df, "loo", (0.8, 0.1, 0.1), seed, rule).tolist() == expected


def test_loo_default_rule_is_the_file_order():
    df = frame(**SAME_SECOND)
    assert (leave_one_out_split(df) == leave_one_out_split(df, "row", seed=5)).all()
    assert (split_interactions(df, "loo") == leave_one_out_split(df, "row")).all()
    assert leave_one_out_split(df.iloc[[1, 0, 2, 3, 5, 4]].reset_index(drop=True)).tolist() == [
        TRAIN,
        VALID,
        TRAIN,
        TEST,
        TRAIN,
        TEST,
    ]  # swapped rows swap roles


def test_loo_random_rule_is_seeded():
    df = random_frame(3000, n_users=200, n_items=300, n_times=5)
    a, b = leave_one_out_split(df, "random", 1), leave_one_out_split(df, "random", 2)
    assert (a == leave_one_out_split(df, "random", 1)).all()
    assert (a != b).any() and ((a == TEST) == (b == TEST)).mean() > 0.5


@pytest.mark.parametrize("method", ["random", "loo", "temporal", "cold_items"])
def test_unknown_tie_rule_is_a_one_line_error(method: str):
    expected = r"^data\.tie_break: unknown rule 'time'; choose from \['row', 'item', 'random'\]$"
    with pytest.raises(ValueError, match=expected):
        split_interactions(frame(**SAME_SECOND), method, (0.8, 0.1, 0.1), 0, "time")


# ---------------------------------------------------------------- temporal
def test_temporal_exact_codes_with_ties_at_both_boundaries():
    ts = [70, 10, 60, 50, 80, 20, 60, 30, 70, 40]
    df = frame(user=list(range(10)), item=list(range(10)), ts=ts)
    # sorted ts: 10 20 30 40 50 60 | 60 70 | 70 80 nominally (6/2/2); the 60s all go VALID, the 70s all TEST
    assert temporal_split(df, (0.6, 0.2, 0.2)).tolist() == [2, 0, 1, 0, 2, 0, 1, 0, 2, 0]
    # no TEST share: 70 80 nominally VALID (8/2/0), and the first VALID timestamp (70) pulls in the other 70
    assert temporal_split(df, (0.8, 0.2, 0.0)).tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0]


def test_temporal_boundaries_are_strict_on_random_log():
    rng = np.random.default_rng(0)
    df = frame(rng.integers(0, 100, 2000), rng.integers(0, 500, 2000), rng.integers(0, 300, 2000))
    split = temporal_split(df, (0.8, 0.1, 0.1))
    ts = df["timestamp"].to_numpy()
    train, valid, test = (ts[split == code] for code in (TRAIN, VALID, TEST))
    assert len(valid) and len(test)
    assert train.max() < valid.min() and valid.max() < test.min()
    assert len(train) <= 1600 and len(train) + len(valid) <= 1800  # ties only ever move to the later split
    assert len(train) > 1500 and len(test) >= 200


# ---------------------------------------------------------------- cold items
def test_cold_items_are_disjoint_and_counted_by_the_rounding_rule():
    df = random_frame(2000, n_users=100, n_items=150, n_times=1000)
    split = cold_item_split(df, (0.7, 0.2, 0.1), seed=0)
    items = {code: set(df["item_id"][split == code]) for code in (TRAIN, VALID, TEST)}
    m = df["item_id"].nunique()
    assert len(items[VALID]) == round(0.2 * m) and len(items[TEST]) == round(0.1 * m)
    assert len(items[TRAIN]) == m - round(0.2 * m) - round(0.1 * m)
    assert not (items[TRAIN] & items[VALID]) and not (items[TRAIN] & items[TEST]) and not (items[VALID] & items[TEST])
    assert (split == cold_item_split(df, (0.7, 0.2, 0.1), seed=0)).all()
    assert not (split == cold_item_split(df, (0.7, 0.2, 0.1), seed=1)).all()
    shuffled = df.sample(frac=1.0, random_state=2)
    again = pd.Series(cold_item_split(shuffled, (0.7, 0.2, 0.1), seed=0), index=shuffled.index).sort_index()
    assert (again.to_numpy() == split).all()


def test_cold_items_take_at_least_one_item_each():
    df = frame(user=[1, 2, 1, 2, 3], item=[5, 5, 6, 7, 7], ts=[1, 2, 3, 4, 5])
    split = cold_item_split(df, (0.8, 0.1, 0.1), seed=0)  # round(0.3) = 0, raised to 1 valid and 1 test item
    per_item = pd.Series(split).groupby(df["item_id"]).agg(["min", "max"])
    assert (per_item["min"] == per_item["max"]).all() and sorted(per_item["min"]) == [TRAIN, VALID, TEST]
    assert (cold_item_split(df, (0.9, 0.0, 0.1), seed=0) != VALID).all()


# ---------------------------------------------------------------- dispatch, errors, random
def test_dispatch_matches_the_splitters():
    df = random_frame(500, n_users=30, n_items=60, n_times=50)
    assert list(SPLITTERS) == ["random", "loo", "temporal", "cold_items"]
    ratios = (0.6, 0.2, 0.2)
    assert (split_interactions(df, "random", ratios, 3) == random_split(len(df), ratios, 3)).all()
    assert (split_interactions(df, "loo", ratios, 3) == leave_one_out_split(df)).all()
    assert (split_interactions(df, "temporal", ratios, 3) == temporal_split(df, ratios)).all()
    assert (split_interactions(df, "cold_items", ratios, 3) == cold_item_split(df, ratios, 3)).all()


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.8, 0.3, -0.1), (0.5, 0.2, 0.2), ("a", "b", "c")])
@pytest.mark.parametrize("method", ["random", "temporal", "cold_items"])
def test_bad_ratios_name_the_config_key(method: str, ratios: tuple):
    df = frame(user=[1, 2], item=[1, 2], ts=[1, 2])
    with pytest.raises(ValueError, match=RATIO_ERROR):
        split_interactions(df, method, ratios, 0)


def test_bad_ratios_direct_calls():
    df = frame(user=[1, 2], item=[1, 2], ts=[1, 2])
    with pytest.raises(ValueError, match=RATIO_ERROR + r"\[0\.5, 0\.5, 0\.5\]$"):
        random_split(10, [0.5, 0.5, 0.5], 0)
    with pytest.raises(ValueError, match=RATIO_ERROR):
        temporal_split(df, (1.0, 0.0))
    with pytest.raises(ValueError, match=RATIO_ERROR):
        cold_item_split(df, (0.2, 0.2, 0.2))


@pytest.mark.parametrize("method", ["random", "loo", "temporal", "cold_items"])
def test_empty_frame_is_refused(method: str):
    with pytest.raises(ValueError, match=r"^data\.split: no interactions to split$"):
        split_interactions(frame([], [], []), method, (0.8, 0.1, 0.1), 0)


def test_unknown_method_lists_the_choices():
    msg = r"^data\.split: unknown method 'leave_one_out'; choose from \['random', 'loo', 'temporal', 'cold_items'\]$"
    with pytest.raises(ValueError, match=msg):
        split_interactions(frame([1], [1], [1]), "leave_one_out", (0.8, 0.1, 0.1), 0)


def test_random_split_still_800_100_100():
    split = random_split(1000, (0.8, 0.1, 0.1), seed=0)
    assert split.dtype == np.int8 and [(split == c).sum() for c in (TRAIN, VALID, TEST)] == [800, 100, 100]


def test_train_fraction_keeps_a_nested_share_of_train_and_every_held_out_row():
    split = np.array([TRAIN, VALID, TRAIN, TEST, TRAIN, TRAIN, TRAIN, TRAIN, VALID, TRAIN], dtype=np.int8)  # 7 TRAIN
    half, quarter = kept_train_rows(split, 0.5, seed=3), kept_train_rows(split, 0.25, seed=3)
    assert half[split != TRAIN].all() and quarter[split != TRAIN].all()
    assert half[split == TRAIN].sum() == 4 and quarter[split == TRAIN].sum() == 2  # round(3.5) = 4, round(1.75) = 2
    assert (half | ~quarter).all()  # the quarter's TRAIN rows are among the half's
    assert kept_train_rows(split, 1.0, seed=3).all()
    assert not np.array_equal(kept_train_rows(split, 0.5, seed=4), half)  # the seed draws the rows
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^data\.train_fraction: need 0 < fraction <= 1, got {bad}$"):
            kept_train_rows(split, bad, seed=0)
