"""BPR-MF as RecBole trains it: (user, item) training pairs once per epoch, negatives outside the user's TRAIN items,
and the model learning a planted pattern."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m6rec.models.bpr_mf import BPRMF
from m6rec.models.closed_form import RandomScores
from m6rec.systems.item_ranking import ItemRankingSystem
from tests.test_id_baselines import POP_LOG, datamodule, evaluate, train, two_group_log

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pair_rows_are_each_train_interaction_once_per_epoch(tmp_path: Path):
    dm = datamodule(tmp_path, POP_LOG, 5, train_rows="pairs", batch_size=3)
    users, items = dm.train_pairs()
    expected = sorted(zip(users.tolist(), items.tolist(), strict=True))
    assert len(expected) == 8  # 4 users x (4 items - valid - test)
    seen = []
    for batch in dm.train_dataloader():
        assert batch["sequence"].shape[1] == 1  # one positive per row
        seen += zip(batch["user"].tolist(), batch["sequence"][:, 0].tolist(), strict=True)
    assert sorted(seen) == expected
    with pytest.raises(ValueError, match="data.train_rows"):
        datamodule(tmp_path / "bad", POP_LOG, 5, train_rows="triples")


def test_negatives_are_uniform_over_the_items_a_user_did_not_train_on(tmp_path: Path):
    torch.manual_seed(0)
    dm = datamodule(tmp_path, two_group_log(), 20, train_rows="pairs")
    model = BPRMF(dm.catalogue, dim=4)
    with pytest.raises(RuntimeError, match="call fit"):
        model.loss(next(iter(dm.train_dataloader())))
    users, items = dm.train_pairs()
    model.fit(users, items)
    trained = {u: set(items[users == u].tolist()) for u in users.unique().tolist()}
    draws = torch.arange(dm.catalogue.num_users).repeat_interleave(2000)
    negatives = model.sample_negatives(draws).view(dm.catalogue.num_users, 2000)
    for user, row in enumerate(negatives.tolist()):
        allowed = set(range(1, 21)) - trained[user]  # 14 items: 20 minus the user's 6 TRAIN items
        assert set(row) == allowed
        counts = np.bincount(row, minlength=21)[sorted(allowed)]
        assert counts.min() > 0.6 * 2000 / 14  # uniform: about 143 draws each


def test_bpr_mf_learns_the_users_group(tmp_path: Path):
    """Users 1-16 only see items 1-10, users 17-32 only items 11-20: the user's own group must rank first."""
    torch.manual_seed(0)
    dm = datamodule(tmp_path, two_group_log(), 20, train_rows="pairs", batch_size=32)
    system = ItemRankingSystem(BPRMF(dm.catalogue, dim=8), ks=[1, 3])
    system.model.fit(*dm.train_pairs())
    losses = train(system, dm, 30, 1e-2)  # 6 steps an epoch; longer, it overfits (held-out items are negatives)
    assert np.mean(losses[:6]) > 0.65 and np.mean(losses[-6:]) < 0.25  # from log 2 ≈ 0.69
    # 3 unmasked items of the user's own group remain at test (10 - 6 train - 1 valid), 10 of the other group
    assert evaluate(system, dm, "test")["hr@3"] >= 0.9
    random = ItemRankingSystem(RandomScores(dm.catalogue, seed=0), ks=[1, 3])
    assert evaluate(random, dm, "test")["hr@3"] < 0.5
