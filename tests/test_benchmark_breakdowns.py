"""benchmarks/by_popularity.py and benchmarks/ensemble.py: buckets, metrics and the ensemble rule, by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from benchmarks.by_popularity import auc, bucket_metrics, bucket_names, bucket_of, ranking_metrics, summarise
from benchmarks.ensemble import ensemble, logloss, partner_seeds, versus


def test_buckets_split_training_counts_at_the_edges():
    assert bucket_names() == ["0-19", "20-49", "50-99", "100-199", "200+"]
    counts = np.array([0, 19, 20, 49, 50, 99, 100, 199, 200, 5000])
    assert bucket_of(counts).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_ranking_metrics_one_target_per_row():
    # ranks 0, 1, 9 hit (gains 1, 1/log2(3), 1/log2(11)); 10 and 50 miss
    values = ranking_metrics(np.array([0, 1, 9, 10, 50]))
    assert values["HR@10"] == pytest.approx(3 / 5)
    assert values["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)


def test_auc_counts_ties_one_half_as_torchmetrics_does():
    label = np.array([1, 0, 1, 0, 1, 0, 0], np.float32)
    score = np.array([0.9, 0.9, 0.3, 0.1, 0.5, 0.5, 0.2], np.float32)
    # positives 0.9, 0.3, 0.5 vs negatives 0.9, 0.1, 0.5, 0.2: wins 3.5 + 2 + 2.5 = 8 of 12
    assert auc(label, score) == pytest.approx(8 / 12)
    assert auc(label, score) == pytest.approx(binary_auroc(torch.tensor(score), torch.tensor(label).long()).item())
    assert math.isnan(auc(np.ones(3), np.arange(3.0)))


def test_bucket_metrics_slice_rows_by_their_items_training_count():
    dump = pd.DataFrame({"label": [1, 0, 1, 0], "score": [0.9, 0.1, 0.2, 0.8]})
    out = bucket_metrics("P2", dump, counts=np.array([5, 5, 300, 300]))
    by = {b["bucket"]: b for b in out}
    assert by["0-19"]["n"] == 2 and by["0-19"]["AUC"] == 1.0
    assert by["200+"]["n"] == 2 and by["200+"]["AUC"] == 0.0
    assert by["20-49"]["n"] == 0 and "AUC" not in by["20-49"]
    assert by["all"]["n"] == 4 and by["all"]["AUC"] == pytest.approx(3 / 4)  # 0.9 > 0.1, 0.8; 0.2 > 0.1


def test_summarise_pairs_each_seed_with_the_first_models_same_seed():
    def run(value):
        return [{"bucket": "all", "n": 10, "AUC": value}]

    rows = summarise({"a": [run(0.70), run(0.72)], "b": [run(0.73), run(0.74)]}, ["a", "b"])
    b = next(r for r in rows if r["model"] == "b")
    assert b["AUC"]["mean"] == pytest.approx(0.735)
    assert b["AUC − a"]["mean"] == pytest.approx(0.025)  # differences 0.03 and 0.02
    assert b["AUC − a"]["std"] == pytest.approx(0.005 * math.sqrt(2))


def test_ensemble_averages_logits_and_refuses_different_rows():
    a = pd.DataFrame({"user_id": [1, 1], "item_id": [3, 4], "label": [1.0, 0.0], "score": [0.8, 0.5]})
    b = a.assign(score=[0.5, 0.2])
    joined = ensemble(a, b)
    # mean logit of 0.8 and 0.5 is log(4) / 2: sigmoid → 2/3; of 0.5 and 0.2: sigmoid(-log(4) / 2) = 1/3
    assert joined["score"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert logloss(joined["label"].to_numpy(), joined["score"].to_numpy()) == pytest.approx(-math.log(2 / 3))
    with pytest.raises(ValueError, match="same"):
        ensemble(a, b.assign(label=[0.0, 0.0]))


def test_versus_is_the_paired_difference_by_seed_with_its_standard_error():
    results = [
        {"pair": "a+a", "AUC": {"values": [0.790, 0.800, 0.795]}},
        {"pair": "a+t", "AUC": {"values": [0.792, 0.799, 0.799]}},
    ]
    versus(results, "a+a")
    d = results[1]["AUC − a+a"]  # differences +0.002, -0.001, +0.004: mean 0.001666…, sample std 0.0025166…
    assert d["mean"] == pytest.approx(0.005 / 3)
    assert d["std"] == pytest.approx(
        math.sqrt(((0.002 - 0.005 / 3) ** 2 + (-0.001 - 0.005 / 3) ** 2 + (0.004 - 0.005 / 3) ** 2) / 2)
    )
    assert d["se"] == pytest.approx(d["std"] / math.sqrt(3))
    assert d["higher"] == 2
    assert results[0]["AUC − a+a"] == {"mean": 0.0, "std": 0.0, "se": 0.0, "higher": 0}


def test_seed_ensemble_partners_are_the_next_seed_or_distinct_given_seeds():
    assert partner_seeds([0, 1, 2], None) == [1, 2, 0]  # each run in two ensembles
    assert partner_seeds([0, 1], [10, 11]) == [10, 11]  # disjoint: independent ensembles
    for bad in ([10], [10, 10], [1, 10]):  # one short; repeated; a partner that is itself a seed
        with pytest.raises(SystemExit, match="--partners"):
            partner_seeds([0, 1], bad)
