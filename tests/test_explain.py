"""The explain task: review-continuation samples (masking, leakage), memorisation, BLEU/ROUGE, LoRA, run.py."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import peft
import pytest
import torch
from torchmetrics.text import BLEUScore, ROUGEScore

import run
from m6rec.data.datamodules.bucketing import LengthGroupedSampler
from m6rec.data.datamodules.explanations import IGNORE, ExplanationDataModule
from m6rec.data.datamodules.resumable import ResumableDataLoader
from m6rec.data.protocol.splits import TEST, TRAIN, VALID
from m6rec.models.backbone import build_lm
from m6rec.systems.explain import ExplainSystem
from tests.helpers import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)

CATEGORY = "Toys"
NAMES = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliet"]
GPT2 = {
    "model_type": "gpt2",
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 4,
    "n_positions": 256,
    "bos_token_id": 1,
    "eos_token_id": 1,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}
SENTENCE = "solid little gadget and it charges fast every single day"
LONG = "this review goes on and on about the colour the weight the box the price the shipping and the smell"


def write_amazon_2018(root: Path, review_of, n_users: int = 12, per_user: int = 7) -> list[dict]:
    """`<Category>.json.gz` + `meta_<Category>.json.gz` in the Amazon Reviews 2018 format; returns the reviews."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        for j, i in enumerate(rng.choice(len(NAMES), per_user, replace=False)):
            row = {
                "overall": float(1 + (u + int(i)) % 5),
                "verified": True,
                "reviewerID": f"U{u:02d}",
                "asin": f"B{int(i):03d}",
                "unixReviewTime": 1_500_000_000 + 86_400 * j + u,
                "summary": f"summary {u} {int(i)}",
            }
            text = review_of(u, int(i), j)
            if text is not None:  # some reviews have no reviewText key at all
                row["reviewText"] = text
            rows.append(row)
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / f"{CATEGORY}.json.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    meta = [
        {"asin": f"B{i:03d}", "title": f"Gadget {n}", "category": ["Toys", "Gadgets"], "brand": "Acme"}
        for i, n in enumerate(NAMES)
    ]
    with gzip.open(root / f"meta_{CATEGORY}.json.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(m) + "\n" for m in meta))
    return rows


def varied_review(u: int, i: int, j: int) -> str | None:
    """A unique marker word per review; every 6th review empty or missing; one long review."""
    if (u * 7 + j) % 6 == 5:
        return None if u % 2 else "   "
    return LONG if (u, j) == (0, 0) else f"the gadget mark{u}q{i} works well for me"


def datamodule(root: Path, tmp_path: Path, **kwargs) -> ExplanationDataModule:
    settings = {
        "data_dir": str(tmp_path / "cache"),
        "dataset": "amazon",
        "root": str(root),
        "source": {"version": "2018", "category": CATEGORY},
        "max_length": 128,
        "max_target_length": 8,
        "batch_size": 16,
        "eval_batch_size": 64,
        **kwargs,
    }
    dm = ExplanationDataModule(**settings)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def varied(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("amazon-varied")
    return root, write_amazon_2018(root, varied_review)


def test_labels_mask_the_prompt_and_cover_exactly_the_target_and_eos(varied, tmp_path: Path):
    root, rows = varied
    dm = datamodule(root, tmp_path)
    tok, eos = dm.tokenizer, dm.tokenizer.eos_token_id
    reviews = {(f"U{u:02d}", f"B{i:03d}"): None for u in range(12) for i in range(10)}
    reviews.update({(r["reviewerID"], r["asin"]): r.get("reviewText", "").strip() for r in rows})
    users, items = dm.tables.users["raw_id"].tolist(), dm.tables.items["raw_id"].tolist()
    with_text = sum(bool(r.get("reviewText", "").strip()) for r in rows)
    assert sum(len(dm.datasets[s]) for s in ("train", "valid", "test")) == with_text == 70  # 84 minus 14 empty
    batch = next(iter(dm._loader("train", train=False)))
    for row in range(len(batch["input_ids"])):
        review = reviews[users[batch["user_ids"][row] - 1], items[batch["item_ids"][row] - 1]]
        expected = [*tok(" " + review, add_special_tokens=False)["input_ids"][:8], eos]
        length = int(batch["attention_mask"][row].sum())
        start = length - len(expected)
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        assert labels[start:length].tolist() == ids[start:length].tolist() == expected
        assert (labels[:start] == IGNORE).all() and (labels[length:] == IGNORE).all()  # prompt and padding
        assert tok.decode(ids[:start]).endswith("because")
        assert batch["references"][row] == tok.decode(expected[:-1]).strip()
        prompt = batch["prompt_input_ids"][row][batch["prompt_attention_mask"][row].bool()]  # left-padded prompt alone
        assert prompt.tolist() == ids[:start].tolist() and batch["prompt_attention_mask"][row, -1] == 1
    long = [r for d in dm.datasets.values() for r in d.references if r.startswith("this review")]
    assert long == [tok.decode(tok(" " + LONG, add_special_tokens=False)["input_ids"][:8]).strip()] != [LONG]
    bucketed = datamodule(root, tmp_path, length_bucketing=True)._loader("train", train=True)
    assert isinstance(bucketed, ResumableDataLoader) and isinstance(bucketed.sampler, LengthGroupedSampler)
    seen = sorted(zip(*(torch.cat([b[k] for b in bucketed]).tolist() for k in ("user_ids", "item_ids")), strict=True))
    train = dm.datasets["train"]
    assert seen == sorted(zip(train.user_ids.tolist(), train.item_ids.tolist(), strict=True))  # each once
    summaries = datamodule(root, tmp_path, target_field="summary")  # every row has a summary
    assert sum(len(d) for d in summaries.datasets.values()) == 84
    assert all(r.startswith("summary ") for r in summaries.datasets["test"].references)


def test_held_out_reviews_never_reach_training_inputs_histories_or_the_tokenizer(varied, tmp_path: Path):
    root, _ = varied
    dm = datamodule(root, tmp_path)
    tok, samples = dm.tokenizer, dm.samples()
    train = samples["split"].to_numpy() == TRAIN
    held_out = [t for t in samples.loc[~train, "target"] if t]
    train_reviews = [t for t in samples.loc[train, "target"] if t]
    assert len(held_out) >= 10 and len(train_reviews) >= 50
    corpus = "\n".join(dm.tokenizer_corpus())
    assert all(r in corpus for r in train_reviews)
    assert not any(re.search(r"mark\d+q\d+", r).group() in corpus for r in held_out if "mark" in r)
    train_text = "\n".join(tok.decode(np.concatenate([p, t])) for p, t in zip(*_pairs(dm, "train"), strict=True))
    assert not any(re.search(r"mark\d+q\d+", r).group() in train_text for r in held_out if "mark" in r)
    # every prompt's history = the user's training interactions strictly earlier, as "Gadget X (r/5)", oldest first
    titles = dict(zip(dm.tables.items["item_id"], dm.tables.items["title"], strict=True))
    checked = 0
    for name, dataset in dm.datasets.items():
        for prompt, user, item in zip(dataset.prompts, dataset.user_ids, dataset.item_ids, strict=True):
            text = tok.decode(prompt)
            assert "mark" not in text and "because" in text  # no review text in any prompt
            event = samples[(samples["user_id"] == user) & (samples["item_id"] == item)].iloc[0]
            own = train & (samples["user_id"] == user).to_numpy()
            earlier = samples[own & (samples["timestamp"] < event["timestamp"]).to_numpy()].sort_values("timestamp")
            pairs = zip(earlier["item_id"], earlier["rating"], strict=True)
            history = "; ".join(f"{titles[i]} ({r:.0f}/5)" for i, r in pairs) or "nothing yet"
            assert text == f"A user rated {history}. Then they rated {titles[item]} ({event['rating']:.0f}/5) because"
            checked += name != "train"
    assert checked == len(held_out)


def test_loo_test_prompt_follows_the_validation_interaction(varied, tmp_path: Path):
    """Under `loo` a held-out prompt's history is every earlier-split interaction of its user: TRAIN at validation,
    TRAIN + the validation interaction (newest) at test; the test interaction is in no history."""
    root, _ = varied
    dm = datamodule(root, tmp_path, split="loo", history_len=50)
    samples, titles = dm.samples(), dict(zip(dm.tables.items["item_id"], dm.tables.items["title"], strict=True))
    split = samples["split"].to_numpy()
    for code, name in ((VALID, "valid"), (TEST, "test")):
        dataset = dm.datasets[name]
        assert len(dataset) >= 8
        for prompt, user in zip(dataset.prompts, dataset.user_ids, strict=True):
            earlier = samples[(samples["user_id"] == user).to_numpy() & (split < code)].sort_values("timestamp")
            pairs = zip(earlier["item_id"], earlier["rating"], strict=True)
            history = "; ".join(f"{titles[i]} ({r:.0f}/5)" for i, r in pairs)
            assert dm.tokenizer.decode(prompt).startswith(f"A user rated {history}. Then they rated ")
            assert (split[earlier.index] == VALID).any() == (code == TEST)


def _pairs(dm: ExplanationDataModule, name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return dm.datasets[name].prompts, dm.datasets[name].targets


def _fit(system: ExplainSystem, dm: ExplanationDataModule, steps: int) -> list[float]:
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        callbacks=[Record()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(system, datamodule=dm)
    return losses


def _adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny GPT-2 trained fully for 40 steps on a log where every review is SENTENCE."""
    tmp = tmp_path_factory.mktemp("amazon-repeated")
    write_amazon_2018(tmp / "raw", lambda u, i, j: SENTENCE)
    dm = datamodule(tmp / "raw", tmp, max_target_length=16, history_len=3)
    L.seed_everything(0)
    system = ExplainSystem(lm=build_lm(len(dm.tokenizer), "clm", GPT2), optimizer=_adamw(3e-3), max_new_tokens=16)
    return dm, system, _fit(system, dm, steps=40)


def test_memorising_a_repeated_review_reproduces_it(memorised):
    dm, system, losses = memorised
    assert losses[0] > 4.0 and np.mean(losses[-5:]) < 0.05 * losses[0], losses
    metrics = L.Trainer(logger=False, enable_progress_bar=False).validate(system, datamodule=dm, verbose=False)[0]
    assert metrics["val/bleu"] > 0.99 and metrics["val/rougeL"] == pytest.approx(1.0)
    assert metrics["val/loss"] < 0.1 and metrics["val/perplexity"] == pytest.approx(np.exp(metrics["val/loss"]))
    batch = next(iter(dm.val_dataloader()))
    assert system.explain(batch, dm.tokenizer) == [SENTENCE] * len(batch["references"])
    # batched generation from left-padded prompts of different lengths = one prompt at a time (a random LM with a
    # wide init, whose continuations differ from prompt to prompt)
    assert batch["prompt_attention_mask"].sum(1).unique().numel() > 1
    L.seed_everything(1)
    noisy = ExplainSystem(lm=build_lm(len(dm.tokenizer), "clm", {**GPT2, "initializer_range": 0.5}), max_new_tokens=8)
    alone = [torch.from_numpy(p.astype(np.int64))[None] for p in dm.datasets["valid"].prompts]  # val fits one batch
    one_by_one = [
        noisy.explain({"prompt_input_ids": p, "prompt_attention_mask": torch.ones_like(p)}, dm.tokenizer)[0]
        for p in alone
    ]
    assert noisy.explain(batch, dm.tokenizer) == one_by_one and len(set(one_by_one)) > 1


def test_bleu_and_rouge_equal_torchmetrics_on_the_decoded_strings(memorised):
    dm, system, _ = memorised
    references = dm.datasets["valid"].references
    n = len(references)
    disjoint = "zebra yak xylophone wombat vole umbrella tulip sofa igloo kettle"  # as many words, none shared
    assert len(disjoint.split()) == len(SENTENCE.split())
    references[: n // 2] = [disjoint] * (n // 2)
    try:
        metrics = L.Trainer(logger=False, enable_progress_bar=False).validate(system, datamodule=dm, verbose=False)[0]
        predictions = [t for batch in dm.val_dataloader() for t in system.explain(batch, dm.tokenizer)]
    finally:
        references[: n // 2] = [SENTENCE] * (n // 2)
    kept = (n - n // 2) / n  # exact matches; the others share no n-gram and have the same length (brevity penalty 1)
    bleu = BLEUScore(n_gram=4)(predictions, [[r] for r in [disjoint] * (n // 2) + [SENTENCE] * (n - n // 2)])
    rouge = ROUGEScore(rouge_keys=("rougeL",))(predictions, [disjoint] * (n // 2) + [SENTENCE] * (n - n // 2))
    assert metrics["val/bleu"] == pytest.approx(float(bleu)) == pytest.approx(kept)
    assert metrics["val/rougeL"] == pytest.approx(float(rouge["rougeL_fmeasure"])) == pytest.approx(kept)


def test_lora_on_the_lm_trains_only_the_adapters_and_learns(memorised):
    """peft=lora wraps the LM; a random LM needs a wider init than GPT-2's 0.02: with tiny frozen (tied) embeddings
    the logits cannot move far enough for LoRA to make any continuation likely."""
    dm = memorised[0]
    L.seed_everything(0)
    lm = build_lm(len(dm.tokenizer), "clm", {**GPT2, "initializer_range": 0.2})
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    system = ExplainSystem(lm=lm, peft=lora, optimizer=_adamw(1e-2), max_new_tokens=16)
    trainable = {n for n, p in system.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    losses = _fit(system, dm, steps=30)
    assert np.mean(losses[-5:]) < 0.1 * losses[0], losses
    after = {
        k.replace(".base_layer", ""): v
        for k, v in system.model.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    metrics = L.Trainer(logger=False, enable_progress_bar=False).validate(system, datamodule=dm, verbose=False)[0]
    assert metrics["val/bleu"] > 0.99  # generation goes through the adapted LM


def test_a_dataset_without_reviews_is_a_clear_error(ml100k_dir: Path, varied, tmp_path: Path):
    dm = ExplanationDataModule(data_dir=str(tmp_path), dataset="ml-100k", root=str(ml100k_dir))
    with pytest.raises(ValueError, match=r"^data.dataset=ml-100k has no review text: the explain task needs reviews"):
        dm.setup()
    with pytest.raises(ValueError, match="data.target_field: 'title'"):
        datamodule(varied[0], tmp_path, target_field="title")
    with pytest.raises(ValueError, match=r"data.explain_prompt: must contain \{candidate\}"):
        ExplanationDataModule(data_dir=str(tmp_path), explain_prompt="{user} rated {history} because")
    long_prompts = datamodule(varied[0], tmp_path, max_length=250)  # + 32 generated tokens > 256 positions
    system = ExplainSystem(lm=build_lm(len(long_prompts.tokenizer), "clm", GPT2), optimizer=_adamw(1e-3))
    with pytest.raises(ValueError, match=r"data.max_length=250 \+ 32 target tokens .* exceeds the LM's 256 positions"):
        L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False).fit(system, datamodule=long_prompts)


@pytest.mark.parametrize("method", ["none", "lora"])
def test_explain_experiment_fast_dev_runs_through_run_py(method: str, varied, tmp_path: Path):
    cfg = compose_config(
        [
            "experiment=explain_amazon",
            f"data.root={varied[0]}",
            f"data.source.category={CATEGORY}",
            f"paths.data_dir={tmp_path / 'cache'}",
            "data.k_core=0",
            f"peft={method}",
            "~logger",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    assert (cfg.optimized_metric, cfg.optimized_mode, cfg.task.max_new_tokens) == ("val/loss", "min", 32)
    metrics = run.train(cfg)
    assert {k for k in metrics if k.startswith("test/")} == {"test/loss", "test/perplexity", "test/bleu", "test/rougeL"}
    pct = metrics["params"]["trainable_pct"]
    assert pct == 100.0 if method == "none" else 0 < pct < 50  # LoRA adapts the LM that is trained
    assert metrics["data"]["train_size"] + metrics["data"]["valid_size"] + metrics["data"]["test_size"] == 70
