"""ID-based baselines (P1 next item, P3 cold items): data, exact ranks by hand, and each model learning."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from m6rec.data.datamodules.cold_items import ColdItemDataModule
from m6rec.data.datamodules.id_sequences import SequenceDataModule, sequence_collate, windows
from m6rec.data.datamodules.next_item import NextItemDataModule
from m6rec.data.protocol.splits import TEST, TRAIN, VALID
from m6rec.metrics.all_relevant import all_relevant_values, all_target_ranks
from m6rec.metrics.ranking import ranking_values
from m6rec.models.closed_form import EASE, Popularity, RandomScores
from m6rec.models.content import TfidfContent, item_tokens, tfidf
from m6rec.models.item_embedding import IDEmbedding
from m6rec.models.sasrec import SASRec
from m6rec.systems.item_ranking import ItemRankingSystem
from tests.fixtures import write_grouplens

pytestmark = pytest.mark.usefixtures("one_thread")


def grouplens_log(sequences: dict[int, list[int]], n_items: int) -> dict:
    """A GroupLens-style log: user u rates `sequences[u]` in that order (one second apart, rating 4)."""
    items = [{"item_id": i, "title": f"Movie {i}", "year": "1990", "genres": ["Drama"]} for i in range(1, n_items + 1)]
    users = [{"user_id": u, "age": 30, "gender": "F", "occupation": "writer", "zip": "10000"} for u in sequences]
    ratings = [(u, i, 4, 880000000 + 60 * t) for u, seq in sequences.items() for t, i in enumerate(seq)]
    return {"items": items, "users": users, "ratings": ratings}


def datamodule(tmp_path: Path, sequences: dict[int, list[int]], n_items: int, cls=SequenceDataModule, **kw):
    root = write_grouplens(tmp_path / "log", grouplens_log(sequences, n_items))
    dm = cls(data_dir=str(tmp_path / "cache"), root=str(root), tokenizer=None, **kw)
    dm.setup()
    return dm


def evaluate(system: ItemRankingSystem, dm: SequenceDataModule, stage: str) -> dict[str, float]:
    """The system's `stage` metrics over the datamodule's queries (what a Lightning validation / test epoch does)."""
    system.ranked = torch.as_tensor(dm.ranking_items(stage))
    system.eval()
    loader = dm.val_dataloader() if stage == "val" else dm.test_dataloader()
    with torch.no_grad():
        for batch in loader:
            system.evaluate(batch, stage)
    return {k.split("/")[1]: float(v) for k, v in system.epoch_metrics(stage).items()}


def test_windows_cover_every_next_item_once():
    assert [w.tolist() for w in windows(np.arange(1, 8), 3)] == [[1, 2, 3], [3, 4, 5], [5, 6, 7]]
    assert windows(np.array([4]), 3) == []
    batch = sequence_collate(
        [
            {"user": 0, "sequence": np.array([5, 6]), "targets": np.array([1, 2])},
            {"user": 1, "sequence": np.array([7]), "targets": np.array([3])},
        ]
    )
    assert batch["sequence"].tolist() == [[5, 6], [0, 7]] and batch["targets"].tolist() == [[1, 2], [3, -1]]


POP_LOG = {1: [1, 2, 3, 4], 2: [1, 3, 5, 2], 3: [1, 2, 4, 5], 4: [2, 5, 1, 3]}  # last = test, second last = valid


def test_popularity_ranks_by_hand(tmp_path: Path):
    """TRAIN counts: item 1: 3, 2: 3, 3: 1, 4: 0, 5: 1. Test (train + valid masked): u1 ranks 4 below 5 → 1;
    u2: 2 first → 0; u3: 5 ties 3 → 1 (pessimistic); u4: 3 above 4 → 0. Valid (train masked): u1: 3 ties 5 → 1;
    u2: 5 below 2 → 1; u3: 4 below 3 and 5 → 2; u4: 1 first → 0."""
    dm = datamodule(tmp_path, POP_LOG, 5)
    system = ItemRankingSystem(Popularity(dm.catalogue), ks=[1, 2])
    system.model.fit(*dm.train_pairs())
    assert system.model.counts.tolist() == [3, 3, 1, 0, 1]
    test, val = evaluate(system, dm, "test"), evaluate(system, dm, "val")
    assert test["hr@1"] == pytest.approx(2 / 4) and test["hr@2"] == pytest.approx(1.0)
    assert test["ndcg@2"] == pytest.approx((2 + 2 / np.log2(3)) / 4)
    assert val["hr@1"] == pytest.approx(1 / 4) and val["mrr@2"] == pytest.approx((1 + 2 * 0.5) / 4)


def test_queries_and_masks_equal_next_item_datamodule(ml100k_dir: Path, tmp_path: Path):
    ids = SequenceDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), tokenizer=None)
    text = NextItemDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), max_length=256)
    ids.setup()
    text.setup()
    raw, raw_users = ids.catalogue.item_ids, np.unique(ids.interactions["user_id"])
    for name, code in (("valid", VALID), ("test", TEST)):
        mine = {raw_users[row["user"]]: row for row in ids.datasets[name].rows}
        theirs = text.datasets[name]
        assert len(mine) == len(theirs) == 16
        for user, target, excluded in zip(theirs.user_ids, theirs.item_ids, theirs.excluded, strict=True):
            row = mine[user]
            assert raw[row["targets"] - 1].tolist() == [target]
            assert raw[row["excluded"] - 1].tolist() == excluded.tolist()
            before = ids.indexed[(ids.indexed["user"] == row["user"]) & (ids.indexed["split"] < code)]
            assert row["history"].tolist() == before["item"].tolist()  # TRAIN (+ VALID at test), oldest first
            assert target not in raw[row["history"] - 1]
    split = ids.indexed["split"].to_numpy()
    next_items = sum(len(row["sequence"]) - 1 for row in ids.datasets["train"].rows)
    assert next_items == (split == TRAIN).sum() - 16  # every TRAIN item but each user's first is a target once


def cycle_log(n_users: int = 20, n_items: int = 20, length: int = 15) -> dict[int, list[int]]:
    """User u walks the items in a fixed cycle from item u: the next item is always the current one + 1 (with as many
    users as items, every item has the same TRAIN count, so popularity only ties)."""
    return {u: [(u + j) % n_items + 1 for j in range(length)] for u in range(1, n_users + 1)}


def train(system: ItemRankingSystem, dm: SequenceDataModule, steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.Adam(system.model.parameters(), lr=lr)
    losses = []
    system.train()
    for _ in range(steps):
        for batch in dm.train_dataloader():
            loss = system.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def test_sasrec_learns_a_planted_sequence_that_popularity_cannot(tmp_path: Path):
    torch.manual_seed(0)
    dm = datamodule(tmp_path, cycle_log(), 20, max_seq_len=8, batch_size=16)
    model = SASRec(dm.catalogue, functools.partial(IDEmbedding), hidden=32, heads=2, ffn=64, dropout=0.0, max_len=8)
    sasrec = ItemRankingSystem(model, ks=[1, 10])
    losses = train(sasrec, dm, 60, 1e-2)
    assert losses[-1] < 0.3 * losses[0]
    pop = ItemRankingSystem(Popularity(dm.catalogue), ks=[1, 10])
    pop.model.fit(*dm.train_pairs())
    assert evaluate(sasrec, dm, "test")["hr@1"] >= 0.9
    assert evaluate(pop, dm, "test")["hr@1"] == 0.0  # 6 unmasked items tie: pessimistic rank 5 for everyone


def two_group_log() -> dict[int, list[int]]:
    """Users 1-16 only see items 1-10, users 17-32 only items 11-20 (8 items each, a seeded order)."""
    rng = np.random.default_rng(0)
    return {u: (rng.permutation(10)[:8] + (1 if u <= 16 else 11)).tolist() for u in range(1, 33)}


def test_ease_finds_the_users_group(tmp_path: Path):  # BPR-MF's twin: tests/test_bpr_mf.py
    dm = datamodule(tmp_path, two_group_log(), 20, batch_size=8)
    system = ItemRankingSystem(EASE(dm.catalogue, l2=1.0), ks=[1, 3])
    system.model.fit(*dm.train_pairs())
    # 3 unmasked items of the user's own group remain at test (10 - 6 train - 1 valid), 10 of the other group
    assert evaluate(system, dm, "test")["hr@3"] >= 0.9
    random = ItemRankingSystem(RandomScores(dm.catalogue, seed=0), ks=[1, 3])
    assert evaluate(random, dm, "test")["hr@3"] < 0.5


def test_tfidf_by_hand():
    assert item_tokens("Heat (1995)", "Action|Crime") == ["heat", "1995", "genre:action", "genre:crime"]
    rows = tfidf([["a", "b"], ["a"], ["c", "c"]])
    idf_a, idf_b, idf_c = np.log(4 / 3) + 1, np.log(2) + 1, np.log(2) + 1
    np.testing.assert_allclose(rows[0], np.array([idf_a, idf_b, 0]) / np.hypot(idf_a, idf_b))
    np.testing.assert_allclose(rows[1], [1, 0, 0])
    np.testing.assert_allclose(rows[2], [0, 0, 1])
    assert idf_c == idf_b


def test_content_scores_are_cosine_to_the_mean_history_vector(tmp_path: Path):
    dm = datamodule(tmp_path, POP_LOG, 5)
    model = TfidfContent(dm.catalogue)
    vectors = model.item_vectors().double()
    history = torch.tensor([[0, 1, 3]])  # items 1 and 3
    mean = (vectors[0] + vectors[2]) / 2
    expected = vectors @ mean / mean.norm()
    np.testing.assert_allclose((model.query_vectors({"history": history}).double() @ vectors.T)[0], expected, rtol=1e-5)


def test_cold_items_rank_only_held_out_items_with_all_relevant(ml100k_dir: Path, tmp_path: Path):
    dm = ColdItemDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), tokenizer=None)
    dm.setup()
    frame = dm.indexed
    test_items = set(frame.loc[frame["split"] == TEST, "item"])
    assert set(dm.ranking_items("test").tolist()) == test_items and len(test_items) == 3  # 10 % of 30 items
    assert not test_items & {i for r in dm.datasets["train"].rows for i in r["sequence"].tolist()}
    for row in dm.datasets["test"].rows:
        own = frame[(frame["user"] == row["user"])]
        assert sorted(row["targets"].tolist()) == sorted(own.loc[own["split"] == TEST, "item"])
        assert sorted(row["history"].tolist()) == sorted(own.loc[own["split"] == TRAIN, "item"])
    system = ItemRankingSystem(TfidfContent(dm.catalogue), ks=[3], relevant="all")
    metrics = evaluate(system, dm, "test")
    assert metrics["hr@3"] == 1.0 and metrics["recall@3"] == 1.0  # 3 items: every relevant item is in the top 3


def test_all_relevant_ranks_and_metrics_by_hand():
    # one query, 5 items scored [5, 4, 4, 3, 1]; relevant: items 2 and 3 (tied at 4) and 4; item 0 excluded
    queries, items = torch.ones(1, 1), torch.tensor([[5.0], [4.0], [4.0], [3.0], [1.0]])
    ranks = all_target_ranks(queries, items, torch.tensor([[2, 3, 1]]), torch.tensor([[0]]))
    assert sorted(ranks[0].tolist()) == [0, 1, 2]  # item 0 masked: the three relevant items lead the list
    ranks = all_target_ranks(queries, items, torch.tensor([[3, 4, -1]]), torch.tensor([[-1]]))
    assert ranks.tolist() == [[3, 4, -1]]  # item 3 below items 0, 1, 2; item 4 last
    values = all_relevant_values(torch.tensor([[3, 4, -1], [0, -1, -1]]), ks=[4])
    ideal = 1 + 1 / np.log2(3)
    assert values["ndcg@4"].tolist() == pytest.approx([(1 / np.log2(5)) / ideal, 1.0])
    assert values["hr@4"].tolist() == [1.0, 1.0] and values["recall@4"].tolist() == [0.5, 1.0]
    assert values["mrr@4"].tolist() == [0.25, 1.0]
    single = torch.tensor([0, 3, 12, 7])  # one relevant item per query: the retrieval task's values exactly
    expected = ranking_values(single, ks=(10,))
    got = all_relevant_values(single[:, None], ks=[10])
    for name in ("hr@10", "ndcg@10", "mrr@10"):
        assert got[name].mean().item() == pytest.approx(expected[name].item())
