"""Splits and histories: deterministic, and no validation/test interaction ever reaches a training text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m6rec.data import BehaviourLogDataModule
from m6rec.data.protocol.history import recent_training_history
from m6rec.data.protocol.splits import TEST, TRAIN, VALID, random_split


def test_random_split_ratios_and_determinism():
    a, b = random_split(1000, (0.8, 0.1, 0.1), seed=3), random_split(1000, (0.8, 0.1, 0.1), seed=3)
    assert (a == b).all() and [(a == s).sum() for s in (TRAIN, VALID, TEST)] == [800, 100, 100]
    assert not (a == random_split(1000, (0.8, 0.1, 0.1), seed=4)).all()


def test_history_is_earlier_training_events_only_newest_last():
    inter = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 1, 2],
            "item_id": [10, 11, 12, 13, 14, 10],
            "rating": [5.0, 4.0, 3.0, 2.0, 1.0, 5.0],
            "timestamp": [100, 200, 200, 300, 400, 50],
        }
    )
    is_train = np.array([True, True, True, False, True, True])
    h = recent_training_history(inter, is_train, max_len=2)
    assert h[0] == []  # nothing before t=100
    assert h[1] == [(10, 5.0)]  # the tie at t=200 (item 12) is not "earlier"
    assert h[2] == [(10, 5.0)]
    assert h[3] == [(11, 4.0), (12, 3.0)]  # test event sees the two newest earlier training items
    assert h[4] == [(11, 4.0), (12, 3.0)]  # item 13 is test: never in a history
    assert h[5] == []  # user 2's own log


@pytest.mark.parametrize("method", ["random", "loo", "temporal", "cold_items"])
def test_no_valid_or_test_interaction_reaches_any_rendered_text(ml100k_dir: Path, tmp_path: Path, method: str):
    dm = BehaviourLogDataModule(
        data_dir=str(tmp_path), root=str(ml100k_dir), split=method, history_len=50, max_length=512
    )
    inter = dm.tables.interactions
    split = dm.split_codes()
    assert {int(c) for c in np.unique(split)} == {TRAIN, VALID, TEST}
    histories = recent_training_history(inter, split == TRAIN, 50)
    held_out = {(u, i) for u, i, s in zip(inter["user_id"], inter["item_id"], split, strict=True) if s != TRAIN}
    for row, hist in enumerate(histories):
        for item, _ in hist:
            assert (inter["user_id"].iloc[row], item) not in held_out
    # and in the rendered text of every sample: a held-out item's history piece never appears for its user
    texts = dm.render_texts(inter, histories)
    titles = dm.tables.items.set_index("item_id")["title"]
    rows = pd.DataFrame({"u": inter["user_id"], "text": texts})
    for u, i in held_out:
        for text in rows.loc[rows["u"] == u, "text"]:
            assert f" {titles[i]} (" not in text.split(". Will")[0]
    dm.setup()
    sizes = [len(dm.datasets[name]) for name in ("train", "valid", "test")]
    assert sizes == [(split == code).sum() for code in (TRAIN, VALID, TEST)]
    if method == "cold_items":
        assert not set(dm.datasets["train"].item_ids) & set(dm.datasets["test"].item_ids)


def test_implicit_mode_samples_negatives_per_split_and_k_core_filters(ml100k_dir: Path, tmp_path: Path):
    dm = BehaviourLogDataModule(
        data_dir=str(tmp_path),
        root=str(ml100k_dir),
        implicit=True,
        negatives={"ratio": 2, "strategy": "popularity"},
        max_length=256,
    )
    samples = dm.samples()
    positives = samples[samples["observed"]]
    assert len(positives) == 320 and (positives["label"] == 1).all()
    for code in (TRAIN, VALID, TEST):  # ratio negatives per positive, inside each split
        part = samples[samples["split"] == code]
        assert (part["label"] == 0).sum() == 2 * (part["label"] == 1).sum()
    seen = set(zip(positives["user_id"], positives["item_id"], strict=True))
    negatives = samples[~samples["observed"]]
    assert not any((u, i) in seen for u, i in zip(negatives["user_id"], negatives["item_id"], strict=True))
    dm.setup()
    assert len(dm.datasets["train"]) == 3 * (positives["split"] == TRAIN).sum()
    assert dm.stats["train_positive_rate"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="data.k_core: no interactions left"):  # every fixture user has 20
        BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), k_core=21).setup()
    kept = BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), k_core=5).interactions
    assert (kept.groupby("item_id").size() >= 5).all() and (kept.groupby("user_id").size() >= 5).all()
