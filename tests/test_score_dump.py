"""`eval.dump_scores`: the dumped test scores recompute the logged test metrics exactly."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from m6rec.data.protocol.splits import TEST, VALID
from m6rec.metrics.ranking import ranking_values
from m6rec.metrics.score_dump import ScoreDump
from m6rec.peft import apply_peft
from tests.helpers import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


def _trainer(tmp_path: Path, **settings) -> L.Trainer:
    """A quiet CPU trainer whose ScoreDump writes to `tmp_path / "run"`."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ScoreDump(tmp_path / "run")],
        **settings,
    )


def _dump(experiment: str, tmp_path: Path, ml100k_dir: Path, *overrides: str):
    """Test an untrained `experiment` on the fixture with a ScoreDump; (datamodule, logged metrics, dumped table)."""
    cfg = compose_config(
        [
            f"experiment={experiment}",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'c'}",
            "data.eval_batch_size=7",
            *overrides,
        ],
        tmp_path,
    )
    L.seed_everything(0)
    datamodule = instantiate(cfg.data)
    backbone = instantiate(cfg.model.backbone, vocab_size=len(datamodule.tokenizer))
    system = instantiate(cfg.task, backbone=apply_peft(backbone, instantiate(cfg.peft)))
    trainer = _trainer(tmp_path)
    trainer.test(system, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    return datamodule, metrics, pq.read_table(tmp_path / "run" / "scores_test.parquet").to_pydict()


def test_ctr_dump_recomputes_auc_and_accuracy(tmp_path: Path, ml100k_dir: Path):
    datamodule, metrics, dump = _dump("ctr_lora", tmp_path, ml100k_dir)
    test = datamodule.datasets["test"]
    assert len(dump["score"]) == len(test) and set(dump) == {"user_id", "item_id", "label", "score"}
    pairs = sorted(zip(test.user_ids.tolist(), test.item_ids.tolist(), test.labels.tolist(), strict=True))
    assert list(zip(dump["user_id"], dump["item_id"], dump["label"], strict=True)) == pairs
    score, label = torch.tensor(dump["score"]), torch.tensor(dump["label"]).long()
    assert binary_auroc(score, label).item() == metrics["test/auc"]
    assert binary_accuracy(score, label).item() == metrics["test/acc"]
    logloss = -np.mean([np.log(s) if y else np.log1p(-s) for s, y in zip(dump["score"], dump["label"], strict=True)])
    assert logloss == pytest.approx(metrics["test/logloss"], rel=1e-5)


def test_rating_dump_recomputes_rmse_and_mae(tmp_path: Path, ml100k_dir: Path):
    _, metrics, dump = _dump("rating_lora", tmp_path, ml100k_dir)
    error = np.asarray(dump["prediction"], np.float64) - np.asarray(dump["rating"], np.float64)
    assert np.sqrt(np.mean(error**2)) == pytest.approx(metrics["test/rmse"], rel=1e-6)
    assert np.mean(np.abs(error)) == pytest.approx(metrics["test/mae"], rel=1e-6)


def test_retrieval_dump_recomputes_the_ranking_metrics_and_masks_seen_items(tmp_path: Path, ml100k_dir: Path):
    datamodule, metrics, dump = _dump("retrieval_lora", tmp_path, ml100k_dir)
    assert dump["user_id"] == list(range(1, 17))  # loo: one test query per user, sorted
    assert len(set(dump["rank"])) > 3  # the untrained towers still tell items apart
    for name, value in ranking_values(torch.tensor(dump["rank"]), (10, 20)).items():
        assert value.float().item() == metrics[f"test/{name}"], name
    inter, codes = datamodule.interactions, datamodule.split_codes()
    for row, user in enumerate(dump["user_id"]):
        target, rank, score = dump["item_id"][row], dump["rank"][row], dump["score"][row]
        top, top_scores = dump["top_items"][row], dump["top_scores"][row]
        mine = (inter["user_id"] == user).to_numpy()
        masked = set(inter.loc[mine & (codes <= VALID), "item_id"].tolist())
        assert inter.loc[mine & (codes == TEST), "item_id"].tolist() == [target]
        assert len(top) == 30 - len(masked) == 11 and not masked & set(top)  # every unmasked item, best first
        assert top_scores == sorted(top_scores, reverse=True) and target in top
        assert top_scores[top.index(target)] == score
        assert rank == sum(s >= score for i, s in zip(top, top_scores, strict=True) if i != target)  # pessimistic


def test_id_ranking_dump_has_raw_ids_and_recomputes_the_ranking_metrics(tmp_path: Path, ml100k_dir: Path):
    from m6rec.build import build_datamodule_and_system

    cfg = compose_config(
        ["experiment=p1_pop", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'c'}", "data.eval_batch_size=5"],
        tmp_path,
    )
    datamodule, system = build_datamodule_and_system(cfg)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(system, datamodule=datamodule)  # Pop: counts the TRAIN items at fit start
    trainer.test(system, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    dump = pq.read_table(tmp_path / "run" / "scores_test.parquet").to_pydict()
    assert set(dump) == {"user_id", "item_id", "rank"} and dump["user_id"] == list(range(1, 17))  # raw ids, sorted
    inter, codes = datamodule.interactions, datamodule.split_codes()
    for user, item in zip(dump["user_id"], dump["item_id"], strict=True):  # the raw id of each user's test item
        assert inter.loc[(inter["user_id"] == user).to_numpy() & (codes == TEST), "item_id"].tolist() == [item]
    for name, value in ranking_values(torch.tensor(dump["rank"]), (10, 20)).items():
        assert value.float().item() == metrics[f"test/{name}"], name
