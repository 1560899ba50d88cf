"""Exact distributed evaluation: one checkpoint tested by 1 process and by 2 CPU processes (gloo DDP) gives the same
AUC / GAUC (CTR) and NDCG@10 / HR@10 (retrieval over the full catalogue) to 1e-6, with uneven last batches.

data.eval_batch_size (like data.batch_size) is per device: 2 processes at eval_batch_size=4 score 8 rows per step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run
from tests.fixtures import make_log, write_grouplens
from tests.helpers import compose_config, run_cli

pytestmark = pytest.mark.slow
METRICS = {
    "ctr_lora": ("test/auc", "test/gauc"),
    "retrieval_lora": ("test/ndcg@10", "test/hr@10"),
    "p1_sasrec": ("test/ndcg@10", "test/hr@10"),
    "p2_fm": ("test/auc", "test/gauc"),
}  # and the baselines
ROOT_KEY = {"p2_fm": "data.behaviour.root"}  # where the experiment's data config takes the log folder
EVAL_BATCH = 4


@pytest.mark.parametrize("experiment", list(METRICS))
def test_one_and_two_processes_give_the_same_test_metrics(tmp_path: Path, experiment: str):
    root = write_grouplens(tmp_path / "ml-100k", make_log(n_users=15))  # 15 users: ranks hold 8 and 7 (retrieval)
    common = [
        f"experiment={experiment}",
        f"{ROOT_KEY.get(experiment, 'data.root')}={root}",
        f"paths.data_dir={tmp_path / 'cache'}",
        "data.batch_size=16",
        f"data.eval_batch_size={EVAL_BATCH}",
    ]
    cfg = compose_config(
        [*common, "~logger", "~callbacks.rich_progress_bar", "~callbacks.model_summary", "trainer.max_epochs=2"],
        tmp_path / "train",
    )
    trained = run.train(cfg)
    single = run.train(
        compose_config(
            [
                *common,
                "~logger",
                "~callbacks.rich_progress_bar",
                "~callbacks.model_summary",
                "train=false",
                f"ckpt_path={trained['best_checkpoint']}",
            ],
            tmp_path / "one",
        )
    )
    dump = tmp_path / "ranks"
    dump.mkdir()
    run_cli(
        [
            *common,
            "logger=csv",
            "trainer=ddp_cpu",
            "train=false",
            f"ckpt_path={trained['best_checkpoint']}",
            "+callbacks.dump._target_=tests.helpers.DumpTestMetrics",
            f"+callbacks.dump.out_dir={dump}",
        ],
        tmp_path,
    )
    double = json.loads(next(tmp_path.glob("logs/*/runs/*/metrics.json")).read_text())
    ranks = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]

    for name in METRICS[experiment]:
        assert double[name] == pytest.approx(single[name], abs=1e-6), name
        assert ranks[1]["metrics"][name] == pytest.approx(single[name], abs=1e-6), name  # every rank, not only 0
    assert 0.0 < single[METRICS[experiment][0]] < 1.0  # not a degenerate value that any split would reproduce
    test_size = double["data"]["test_size"]
    assert ranks[0]["seen"] + ranks[1]["seen"] == test_size  # each test row scored once: no padded duplicates
    for rank in ranks:  # the batch size is per device: full batches of EVAL_BATCH, then one uneven last batch
        assert all(size == EVAL_BATCH for size in rank["batches"][:-1]) and 0 < rank["batches"][-1] <= EVAL_BATCH
    assert any(rank["batches"][-1] < EVAL_BATCH for rank in ranks)  # an uneven last batch was exercised
