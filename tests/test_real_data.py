"""Slow tier: the real MovieLens-100K (fetched into the shared cache on first use) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m6rec.data import BehaviourLogDataModule
from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.slow
DATA_DIR = ROOT / "data"


def test_real_ml100k_statistics_and_text():
    dm = BehaviourLogDataModule(data_dir=str(DATA_DIR))
    dm.setup()
    s = dm.stats
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
    assert (s["train_size"], s["valid_size"], s["test_size"]) == (80_000, 10_000, 10_000)
    assert s["train_positive_rate"] == pytest.approx(0.5534, abs=1e-4)  # label = rating >= 4
    text = dm.tokenizer.decode(dm.datasets["train"].input_ids[1])
    assert text.startswith("A 25-year-old male writer rated ") and "Will he enjoy Heavyweights (1994)" in text
    assert max(len(x) for d in dm.datasets.values() for x in d.input_ids) <= dm.hparams.max_length


def test_ctr_lora_learns_on_real_data(tmp_path: Path):
    """A short run (a quarter epoch) must already rank clearly better than chance."""
    run_cli(
        [
            "experiment=ctr_lora",
            "logger=csv",
            f"paths.data_dir={DATA_DIR}",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=300",
            "+trainer.limit_val_batches=10",
        ],
        tmp_path,
    )
    out = sorted(tmp_path.glob("logs/ctr_lora/runs/*"))[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["test_size"] == 10_000
    assert metrics["test/auc"] > 0.6, metrics


@pytest.mark.parametrize("split", ["loo", "temporal", "cold_items"])
def test_every_split_runs_on_real_data(split: str, tmp_path: Path):
    """Each protocol end to end on the real log: the held-out sizes it must produce, and a test AUC."""
    import run
    from tests.helpers import compose_config

    cfg = compose_config(
        [
            "experiment=ctr_lora",
            f"data.split={split}",
            f"paths.data_dir={DATA_DIR}",
            "~logger",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=20",
            "+trainer.limit_val_batches=2",
        ],
        tmp_path,
    )
    metrics = run.train(cfg)
    data = metrics["data"]
    assert data["train_size"] + data["valid_size"] + data["test_size"] == 100_000
    if split == "loo":  # every ML-100K user has >= 20 ratings: one validation and one test rating each
        assert data["valid_size"] == data["test_size"] == 943
    elif split == "temporal":  # one global cut near 80/10/10 (ties move to the later split)
        assert abs(data["train_size"] - 80_000) < 100 and abs(data["test_size"] - 10_000) < 200
    else:  # 10 % of the 1,682 items held out for each of validation and test
        assert data["valid_size"] > 0 and data["test_size"] > 0
    assert 0.0 < metrics["test/auc"] < 1.0
