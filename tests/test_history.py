"""Splits and histories: deterministic, and no validation/test interaction ever reaches a training text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from m6rec.data import BehaviourLogDataModule
from m6rec.data.history import recent_training_history
from m6rec.data.splits import TEST, TRAIN, VALID, random_split


def test_random_split_ratios_and_determinism():
    a, b = random_split(1000, (0.8, 0.1, 0.1), seed=3), random_split(1000, (0.8, 0.1, 0.1), seed=3)
    assert (a == b).all() and [(a == s).sum() for s in (TRAIN, VALID, TEST)] == [800, 100, 100]
    assert not (a == random_split(1000, (0.8, 0.1, 0.1), seed=4)).all()


def test_history_is_earlier_training_events_only_newest_last():
    inter = pd.DataFrame({
        "user_id":   [1, 1, 1, 1, 1, 2],
        "item_id":   [10, 11, 12, 13, 14, 10],
        "rating":    [5.0, 4.0, 3.0, 2.0, 1.0, 5.0],
        "timestamp": [100, 200, 200, 300, 400, 50],
    })  # fmt: skip
    is_train = np.array([True, True, True, False, True, True])
    h = recent_training_history(inter, is_train, max_len=2)
    assert h[0] == []                           # nothing before t=100
    assert h[1] == [(10, 5.0)]                  # the tie at t=200 (item 12) is not "earlier"
    assert h[2] == [(10, 5.0)]
    assert h[3] == [(11, 4.0), (12, 3.0)]       # test event sees the two newest earlier training items
    assert h[4] == [(11, 4.0), (12, 3.0)]       # item 13 is test: never in a history
    assert h[5] == []                           # user 2's own log


def test_no_valid_or_test_interaction_reaches_any_rendered_text(ml100k_dir: Path, tmp_path: Path):
    dm = BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), history_len=50, max_length=512)
    inter = dm.tables.interactions
    split = random_split(len(inter), dm.hparams.split_ratios, dm.hparams.split_seed)
    histories = recent_training_history(inter, split == TRAIN, 50)
    held_out = {(u, i) for u, i, s in zip(inter["user_id"], inter["item_id"], split, strict=True) if s != TRAIN}
    for row, hist in enumerate(histories):
        for item, _ in hist:
            assert (inter["user_id"].iloc[row], item) not in held_out
    # and in the rendered text of every sample: a held-out item's history piece never appears for its user
    texts = dm.render_texts(histories)
    titles = dm.tables.items.set_index("item_id")["title"]
    rows = pd.DataFrame({"u": inter["user_id"], "text": texts})
    for (u, i) in held_out:
        for text in rows.loc[rows["u"] == u, "text"]:
            assert f" {titles[i]} (" not in text.split(". Will")[0]
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == len(inter)
