"""The rating, retrieval and zero-shot tasks (and CTR's GAUC) end to end on the fixture log."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torchmetrics.retrieval import RetrievalAUROC

import run
from m6rec.data.protocol.splits import TEST, TRAIN, VALID
from m6rec.data.text.render import render_history_item, render_item_text
from m6rec.metrics.gauc import GroupAUROC
from m6rec.peft import apply_peft
from tests.helpers import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


def _cfg(tmp_path: Path, ml100k_dir: Path, experiment: str, *overrides: str):
    data = [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "data.batch_size=32"]
    return compose_config(
        [
            f"experiment={experiment}",
            *data,
            "~logger",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            *overrides,
        ],
        tmp_path,
    )


def _build(cfg):
    datamodule = instantiate(cfg.data)
    backbone = instantiate(cfg.model.backbone, vocab_size=len(datamodule.tokenizer))
    return datamodule, instantiate(cfg.task, backbone=apply_peft(backbone, instantiate(cfg.peft)))


EXPECTED = {
    "ctr_lora": {"test/auc", "test/gauc", "test/acc", "test/logloss"},
    "rating_lora": {"test/rmse", "test/mae"},
    "retrieval_lora": {f"test/{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (10, 20)},
    "zero_shot": {"test/auc", "test/gauc", "test/loglik"},
}


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_each_task_fast_dev_runs(experiment: str, tmp_path: Path, ml100k_dir: Path):
    metrics = run.train(_cfg(tmp_path, ml100k_dir, experiment, "++trainer.fast_dev_run=true"))
    assert {k for k in metrics if k.startswith("test/")} == EXPECTED[experiment]
    if experiment == "retrieval_lora":  # loo: one validation and one test event per user, 30 items in the catalogue
        assert metrics["data"]["test_size"] == 16 and metrics["data"]["catalogue"] == 30
        assert 0.0 < metrics["test/hr@10"] <= metrics["test/hr@20"] <= 1.0
    if experiment == "rating_lora":
        assert 0.0 < metrics["test/mae"] <= metrics["test/rmse"] < 4.0


def test_rating_mode_is_min_in_the_callbacks(tmp_path: Path):
    cfg = compose_config(["experiment=rating_lora"], tmp_path)
    assert cfg.callbacks.model_checkpoint.mode == cfg.callbacks.early_stopping.mode == "min"
    assert compose_config(["experiment=retrieval_lora"], tmp_path).callbacks.model_checkpoint.mode == "max"


def _train_losses(system, datamodule, epochs: int) -> list[float]:
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_epochs=epochs,
        overfit_batches=1,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[Record()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(system, datamodule=datamodule)
    return losses


@pytest.mark.parametrize(
    ("experiment", "peft", "epochs"), [("rating_lora", "lora", 30), ("retrieval_lora", "none", 20)]
)
def test_loss_drops_when_overfitting_a_batch(experiment: str, peft: str, epochs: int, tmp_path: Path, ml100k_dir: Path):
    cfg = _cfg(
        tmp_path,
        ml100k_dir,
        experiment,
        f"peft={peft}",
        "data.batch_size=16",
        "task.optimizer.lr=3e-3",
        "task.scheduler.num_warmup_steps=0",
    )
    L.seed_everything(0)
    losses = _train_losses(*reversed(_build(cfg)), epochs=epochs)
    first = {"rating_lora": 1.0, "retrieval_lora": 2.5}[experiment]  # MSE around the 3.5 start; log(~16 items)
    assert losses[0] > first and sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def _retrieval(tmp_path: Path, ml100k_dir: Path):
    datamodule, system = _build(_cfg(tmp_path, ml100k_dir, "retrieval_lora", "data.eval_batch_size=64"))
    datamodule.setup()
    return datamodule, system


def _seen(datamodule, user: int, splits: tuple[int, ...]) -> set[int]:
    inter, codes = datamodule.interactions, datamodule.split_codes()
    rows = (inter["user_id"] == user).to_numpy() & np.isin(codes, splits)
    return set(inter.loc[rows, "item_id"].tolist())


def test_retrieval_never_ranks_an_already_seen_item(tmp_path: Path, ml100k_dir: Path):
    datamodule, system = _retrieval(tmp_path, ml100k_dir)
    catalogue = datamodule.catalogue_ids.tolist()
    system.item_ids, system.item_embeddings = torch.tensor(catalogue), torch.eye(len(catalogue))
    for split, seen_splits in (("valid", (TRAIN,)), ("test", (TRAIN, VALID))):
        batch = next(iter(datamodule._loader(split, train=False)))
        queries = torch.zeros(len(batch["item_ids"]), len(catalogue))  # query · item = the item's score
        for row, (user, target) in enumerate(zip(batch["user_ids"].tolist(), batch["item_ids"].tolist(), strict=True)):
            seen = _seen(datamodule, user, seen_splits)
            assert set(batch["excluded_item_ids"][row].tolist()) - {-1} == seen and target not in seen
            queries[row, [catalogue.index(i) for i in seen]] = 1.0  # every seen item outscores the target …
            queries[row, catalogue.index(target)] = 0.5
        assert system.rank(queries, batch).tolist() == [0] * len(queries)  # … yet the target ranks first
        unmasked = {**batch, "excluded_item_ids": torch.full_like(batch["excluded_item_ids"], -1)}
        seen_counts = [len(_seen(datamodule, u, seen_splits)) for u in batch["user_ids"].tolist()]
        assert system.rank(queries, unmasked).tolist() == seen_counts


def test_retrieval_queries_hold_only_earlier_splits(tmp_path: Path, ml100k_dir: Path):
    """A validation query holds TRAIN items only, newest last; a test query TRAIN + the validation item (newest)."""
    datamodule, _ = _retrieval(tmp_path, ml100k_dir)
    items = {row["item_id"]: row for row in datamodule.tables.items.to_dict("records")}
    inter, codes = datamodule.interactions, datamodule.split_codes()

    def rendered(item: int, text: str) -> bool:  # the item in the history, whatever its rating
        return any(render_history_item(items[item], r, datamodule.templates) in text for r in range(1, 6))

    for name, code in (("valid", VALID), ("test", TEST)):
        for user, text in zip(datamodule.datasets[name].user_ids.tolist(), datamodule.query_texts(name), strict=True):
            (valid,), (test,) = _seen(datamodule, user, (VALID,)), _seen(datamodule, user, (TEST,))
            assert not rendered(test, text) and rendered(valid, text) == (code == TEST)
            rows = (inter["user_id"] == user).to_numpy() & (codes < code)
            newest = inter[rows].assign(split=codes[rows]).sort_values(["timestamp", "split", "item_id"]).iloc[-1]
            assert newest["item_id"] == valid or code == VALID
            piece = render_history_item(items[newest["item_id"]], newest["rating"], datamodule.templates)
            assert text.endswith(piece + ".")
    assert "Will" not in datamodule.query_texts("train")[0]  # a query never names a candidate


def test_retrieval_eval_loader_shards_users_without_repeats(tmp_path: Path, ml100k_dir: Path):
    datamodule, _ = _retrieval(tmp_path, ml100k_dir)
    seen = []
    for rank in (0, 1):
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        seen += [u for batch in datamodule.val_dataloader() for u in batch["user_ids"].tolist()]
        assert len(list(datamodule.catalogue_dataloader())[0]["item_ids"]) == 30  # every rank embeds every item
    assert sorted(seen) == list(range(1, 17))


def test_zero_shot_score_is_the_mean_log_likelihood_of_the_candidate_tokens(tmp_path: Path, ml100k_dir: Path):
    datamodule, system = _build(_cfg(tmp_path, ml100k_dir, "zero_shot"))
    datamodule.setup()
    system.set_candidate_lengths(datamodule)
    batch = next(iter(datamodule.test_dataloader()))
    system.eval()
    with torch.no_grad():
        scores = system(batch)
        row = 3
        ids = batch["input_ids"][row, : int(batch["attention_mask"][row].sum())]
        logits = system.model(input_ids=ids[None]).logits[0]
    item = datamodule.tables.items.set_index("item_id").loc[int(batch["item_ids"][row])].to_dict()
    text = " " + render_item_text(item, datamodule.templates)  # the candidate, after "… will enjoy"
    candidate = datamodule.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids_list = ids.tolist()
    start = max(s for s in range(len(ids_list)) if ids_list[s : s + len(candidate)] == candidate)
    assert datamodule.tokenizer.decode(ids_list[start + len(candidate) :], skip_special_tokens=True) == "."
    by_hand = sum(logits[p - 1].log_softmax(-1)[ids_list[p]].item() for p in range(start, start + len(candidate)))
    assert scores[row].item() == pytest.approx(by_hand / len(candidate), abs=1e-5)
    assert len(set(scores.tolist())) > 1


def test_gauc_is_the_mean_auc_of_users_with_both_classes():
    preds = torch.tensor([0.9, 0.3, 0.1, 0.2, 0.5, 0.3, 0.6, 0.1, 0.7])
    target = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0, 0])
    users = torch.tensor([0, 1, 0, 2, 0, 1, 2, 1, 3])
    # user 0: 0.9 (+) above 0.1, 0.5 → 1; user 1: 0.3 (+) ties 0.3, beats 0.1 → 0.75; users 2 (all +), 3 (all −) skipped
    gauc = GroupAUROC()
    gauc.update(preds[:4], target[:4], indexes=users[:4])
    gauc.update(preds[4:], target[4:], indexes=users[4:])
    assert gauc.compute().item() == pytest.approx((1.0 + 0.75) / 2)
    assert RetrievalAUROC()(preds, target, indexes=users).item() == pytest.approx((1.0 + 0.75) / 4)  # why the subclass
    assert GroupAUROC()(preds[:2], target[:2], indexes=users[:2]).item() == 0.0  # nobody has both classes


def test_zero_shot_needs_the_candidate_last():
    from m6rec.data.text.render import Templates
    from m6rec.systems.zero_shot import candidate_token_lengths

    late = SimpleNamespace(templates=Templates(prompt="Will {pronoun} enjoy {candidate}? {user} rated {history}."))
    with pytest.raises(ValueError, match="data.templates.prompt: zero-shot scoring needs {candidate} once"):
        candidate_token_lengths(late)


def test_retrieval_training_batches_carry_the_in_batch_sampling_correction(tmp_path: Path, ml100k_dir: Path):
    datamodule, system = _retrieval(tmp_path, ml100k_dir)
    train = datamodule.datasets["train"]
    counts = {i: int((train.item_ids == i).sum()) for i in set(train.item_ids.tolist())}
    batch = next(iter(datamodule.train_dataloader()))
    expected = [np.log(counts[i] / len(train)) for i in batch["item_ids"].tolist()]  # log(item's share of pairs)
    assert batch["item_log_q"].tolist() == pytest.approx(expected, abs=1e-6)
    with torch.no_grad():  # the loss by hand: softmax over the batch's items, logits corrected by log q, repeats masked
        queries = system(batch)
        items = system.model.embed_items(batch["item_input_ids"], batch["item_attention_mask"])
        logits = (queries @ items.T / 0.07 - batch["item_log_q"][None, :]).tolist()
        ids = batch["item_ids"].tolist()
        by_hand = -np.mean(
            [
                logits[r][r] - np.log(sum(np.exp(logits[r][c]) for c in range(len(ids)) if c == r or ids[c] != ids[r]))
                for r in range(len(ids))
            ]
        )
        assert system.loss(batch).item() == pytest.approx(by_hand, rel=1e-5)
