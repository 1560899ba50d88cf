"""Late interaction: segment roles, budget, exact caching, equivalence with plain GPT-2, training, cache reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import run
from m6rec import recommend as rec
from m6rec.build import build_datamodule_and_system
from m6rec.data import BehaviourLogDataModule
from m6rec.data.protocol.history import recent_training_history
from m6rec.data.protocol.splits import TEST, TRAIN
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import Templates
from m6rec.models.backbone import build_backbone
from m6rec.models.late_interaction import (
    CANDIDATE,
    CONTEXT,
    HISTORY,
    LateInteractionScorer,
    SegmentStateCache,
    late_segments,
    tokenize_late,
)
from m6rec.models.scorer import TextScorer
from tests.helpers import auc_by_hand, compose_config, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)

GPT2 = {
    "model_type": "gpt2",
    "n_layer": 2,
    "n_embd": 32,
    "n_head": 2,
    "n_positions": 128,
    "activation_function": "gelu",
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}


@pytest.fixture(scope="module")
def fixture_data(ml100k_dir, tmp_path_factory):
    """(segments of every fixture sample, labels, samples frame, parts, tokenizer) with full histories."""
    dm = BehaviourLogDataModule(data_dir=str(tmp_path_factory.mktemp("data")), root=str(ml100k_dir), max_length=128)
    samples = dm.samples()
    histories = recent_training_history(samples, (samples["split"] == TRAIN).to_numpy(), 10)
    parts = dm.sample_parts(samples, histories)
    encoder = SegmentEncoder(dm.tokenizer, dm.templates, 128)
    return tokenize_late(parts, encoder, 128), samples["label"].to_numpy(np.float32), samples, parts, dm.tokenizer


def make_model(vocab_size: int, layers_online: int, seed: int = 0) -> LateInteractionScorer:
    torch.manual_seed(seed)
    return LateInteractionScorer(build_backbone(vocab_size, GPT2), layers_online).eval()


def test_late_segments_split_items_from_context():
    segments = late_segments(
        "A 49-year-old male writer", "he", ["Toy Story (5/5)", "Heat (3/5)"], "Kolya (1996)", Templates()
    )
    assert segments == [
        (CONTEXT, "A 49-year-old male writer rated"),
        (HISTORY, " Toy Story (5/5)"),
        (HISTORY, " Heat (3/5)"),
        (CONTEXT, ". Will he enjoy"),
        (CANDIDATE, " Kolya (1996)"),
        (CONTEXT, "?"),
    ]
    empty = late_segments("A user", "they", [], "Heat (1995)", Templates())
    assert empty == [
        (CONTEXT, "A user rated nothing yet. Will they enjoy"),
        (CANDIDATE, " Heat (1995)"),
        (CONTEXT, "?"),
    ]


def test_tokenize_late_drops_oldest_history_to_fit(fixture_data):
    _, _, _, parts, tokenizer = fixture_data
    part = next(p for p in parts if len(p[2]) >= 3)
    encoder = SegmentEncoder(tokenizer, Templates(), 128)
    (full,) = tokenize_late([part], encoder, 128)
    oldest = len(full[1][1])  # the first history segment
    (cut,) = tokenize_late([part], encoder, sum(len(ids) for _, ids in full) - 1)
    assert cut == full[:1] + full[2:]  # exactly the oldest item went
    assert sum(len(ids) for _, ids in cut) == sum(len(ids) for _, ids in full) - oldest
    with pytest.raises(ValueError, match="data.max_length=3 is too small"):
        tokenize_late([part], encoder, 3)


@pytest.mark.parametrize("layers_online", [1, 2])  # 2 = L: nothing cached but embeddings, all blocks online
def test_cached_path_equals_uncached(fixture_data, layers_online):
    segments, _, _, _, tokenizer = fixture_data
    model = make_model(len(tokenizer), layers_online)
    with torch.inference_mode():
        for batch in (segments[:40], segments[100:103], segments[7:8]):
            same_batches = SegmentStateCache(model)  # the cache encodes exactly the segment batches forward() does
            same_batches.add(ids for sample in batch for _, ids in sample)
            assert torch.equal(same_batches.score(batch), model(batch))
        # Built offline in other batches, the states differ only by float32 GEMM rounding (MKL's small-M kernels
        # sum in another order); a wrong or stale lookup would be off by orders of magnitude more.
        offline = SegmentStateCache(model, chunk_size=50)
        offline.add(ids for sample in segments for _, ids in sample)
        for batch in (segments[:40], segments[100:103], segments[7:8]):
            torch.testing.assert_close(offline.score(batch), model(batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers_online", [1, 2])
def test_one_segment_without_segment_embeddings_is_plain_gpt2(fixture_data, layers_online):
    segments, _, _, _, tokenizer = fixture_data
    model = make_model(len(tokenizer), layers_online)
    torch.nn.init.zeros_(model.role_embedding.weight)
    torch.nn.init.zeros_(model.segment_embedding.weight)
    plain = TextScorer(model.backbone, GPT2["n_embd"])
    plain.head = model.head
    texts = [ids for _, ids in segments[0]] + [ids for _, ids in segments[1]]  # lengths differ → padding
    ids = torch.zeros(len(texts), max(map(len, texts)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, t in enumerate(texts):
        ids[row, : len(t)], mask[row, : len(t)] = torch.tensor(t), 1
    with torch.inference_mode():
        late = model([[(CONTEXT, t)] for t in texts])
        torch.testing.assert_close(late, plain(ids, mask), rtol=0, atol=1e-6)
        assert late.std() > 1e-3  # distinct logits: the comparison is not trivially about a constant


def test_training_in_late_mode_drops_the_loss(fixture_data):
    segments, labels, samples, _, tokenizer = fixture_data
    train = np.flatnonzero(samples["split"].to_numpy() == TRAIN)[:32]
    batch, target = [segments[r] for r in train], torch.from_numpy(labels[train])
    rate = target.mean()
    base_rate_loss = -(rate * rate.log() + (1 - rate) * (1 - rate).log())  # best loss without reading the text
    model = make_model(len(tokenizer), layers_online=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss = F.binary_cross_entropy_with_logits(model(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.segment_embedding.weight.grad.abs().sum() > 0  # the segment embeddings are trained too
    assert model.backbone.h[0].attn.c_attn.weight.grad.abs().sum() > 0  # … and the lower (cached) blocks
    assert np.mean(losses[-5:]) < 0.75 * base_rate_loss < 0.75 * losses[0], losses


def test_cache_holds_one_entry_per_distinct_segment(fixture_data):
    segments, _, samples, parts, tokenizer = fixture_data
    cache = SegmentStateCache(make_model(len(tokenizer), layers_online=1))
    occurrences = [ids for sample in segments for _, ids in sample]
    assert cache.add(occurrences) == len(cache)
    candidates = {ids for sample in segments for role, ids in sample if role == CANDIDATE}
    history = {ids for sample in segments for role, ids in sample if role == HISTORY}
    contexts = {ids for sample in segments for role, ids in sample if role == CONTEXT}
    assert len(candidates) == samples["item_id"].nunique()  # one entry per distinct candidate item
    assert len(history) == len({piece for _, _, pieces, _ in parts for piece in pieces})  # per (item, rating)
    assert len(cache) == len(candidates) + len(history) + len(contexts) < len(occurrences) / 3
    assert cache.add(occurrences[:50]) == 0  # already cached: nothing recomputed


def test_layers_online_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="layers_online: expected 1..2"):
        LateInteractionScorer(build_backbone(50, GPT2), layers_online=3)


def train_late_and_full(overrides: list[str], ml100k_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """A 2-block 32-d model trained for one epoch through the CLI, twice (one multirun): task.layers_online=1, then
    the same model full; returns the two run dirs (late, full)."""
    run_cli(
        [
            "-m",
            *overrides,
            "task.layers_online=1,null",
            "logger=csv",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp / 'data'}",
            "model.backbone.config.n_layer=2",
            "model.backbone.config.n_embd=32",
            "trainer.max_epochs=1",
            "data.batch_size=32",
        ],
        tmp,
    )
    late, full = sorted((tmp / "logs").glob("*/multiruns/*/[01]"))
    return late, full


@pytest.fixture(scope="module")
def late_and_full_runs(ml100k_dir, tmp_path_factory) -> tuple[Path, Path]:
    """experiment=ctr_late trained late and full."""
    return train_late_and_full(["experiment=ctr_late"], ml100k_dir, tmp_path_factory.mktemp("late_runs"))


@pytest.fixture(scope="module")
def id_token_late_and_full_runs(ml100k_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The ctr_lora recipe (LoRA + trainable embeddings, ID tokens) on late-interaction segments, late and full."""
    tmp = tmp_path_factory.mktemp("id_token_late_runs")
    return train_late_and_full(["experiment=ctr_lora", "data=ml100k_late_id_tokens"], ml100k_dir, tmp)


@pytest.mark.slow  # two CLI training runs (late_and_full_runs): the slow tier, still run by CI
def test_late_run_batches_carry_segments_whose_tokens_are_the_prompt(late_and_full_runs):
    """The late run trained a LateInteractionScorer on LateSegmentDataModule batches: each sample's segments
    concatenate to its input_ids, and the system's score equals the scorer's uncached forward on them."""
    late_dir, full_dir = late_and_full_runs
    _, dm, system = rec.load_run(late_dir)
    assert isinstance(system.model, LateInteractionScorer) and system.model.layers_online == 1
    assert not isinstance(rec.load_run(full_dir)[2].model, LateInteractionScorer)
    dm.setup("test")
    rows = [dm.datasets["test"][k] for k in range(6)]
    batch = dm.collate_fn()(rows)
    for row, segments in zip(rows, batch["segments"], strict=True):
        assert [i for _, ids in segments for i in ids] == row["input_ids"].tolist()
        assert [role for role, _ in segments].count(CANDIDATE) == 1
    with torch.inference_mode():
        assert torch.equal(system(batch), system.model(batch["segments"]))
    scores, labels = [], []  # the reloaded best checkpoint scores the test set to the AUC the run reported
    with torch.inference_mode():
        for test_batch in dm.test_dataloader():
            scores += system(test_batch).tolist()
            labels += test_batch["labels"].long().tolist()
    metrics = json.loads((late_dir / "metrics.json").read_text())
    assert metrics["test/auc"] == pytest.approx(auc_by_hand(scores, labels), abs=1e-6)
    ranked = rec.recommend(dm, system, 3, k=5)  # the recommender serves late runs through request_rows + collate_fn
    (segments,) = dm.collate_fn()(dm.request_rows(3, [ranked[0][0]]))["segments"]
    with torch.inference_mode():  # alone vs in the catalogue batch: float32 GEMM rounding only
        torch.testing.assert_close(ranked[0][2], system.model([segments]).item(), rtol=0, atol=1e-6)
    assert [s for _, _, s in ranked] == sorted((s for _, _, s in ranked), reverse=True) and len(ranked) == 5


def test_late_interaction_needs_segment_batches_and_an_in_place_peft(ml100k_dir, tmp_path):
    cfg = compose_config(
        [
            "experiment=ctr_lora",
            "task.layers_online=1",
            "~logger",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'data'}",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    with pytest.raises(ValueError, match="task.layers_online=1: late interaction needs segment batches, but data is "):
        run.train(cfg)  # the config check, before any data work
    datamodule, system = build_datamodule_and_system(cfg)  # built without run.py's check: the forward names it
    datamodule.setup("test")
    with pytest.raises(ValueError, match="task.layers_online is set but batches have no `segments`"):
        system(next(iter(datamodule.test_dataloader())))
    from m6rec.peft import apply_peft
    from m6rec.peft.option import OptionTuning
    from m6rec.systems.ctr import CTRSystem

    with pytest.raises(ValueError, match="late interaction needs a GPT-2 backbone adapted in place"):
        CTRSystem(apply_peft(build_backbone(50, GPT2), OptionTuning(n_prompt=4, num_options=2)), layers_online=1)


@pytest.mark.slow  # four CLI training runs (two late/full pairs): the slow tier, still run by CI
def test_benchmark_runs_end_to_end_on_two_pairs(late_and_full_runs, id_token_late_and_full_runs, tmp_path, capsys):
    """Two pairs (ctr_late; ctr_lora with ID tokens): each measured on the same requests, the summary = the mean and
    sample std over the pairs."""
    from benchmarks.late_interaction import SUMMARY_KEYS, main

    pairs = [late_and_full_runs, id_token_late_and_full_runs]
    out = tmp_path / "late.json"
    late_dirs, full_dirs = [str(late) for late, _ in pairs], [str(full) for _, full in pairs]
    args = ["--late-run", *late_dirs, "--full-run", *full_dirs, "--users", "3", "--candidates", "10"]
    result = main([*args, "--warmup-requests", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["command"] == "python benchmarks/late_interaction.py " + " ".join(
        [*args, "--warmup-requests", "1", "--out", str(out)]
    )
    assert [(p["late_run"], p["full_run"]) for p in result["pairs"]] == list(zip(late_dirs, full_dirs, strict=True))
    for pair, (late_dir, full_dir) in zip(result["pairs"], pairs, strict=True):
        assert (pair["layers"], pair["layers_online"], pair["users"], pair["candidates"]) == (2, 1, 3, 10)
        assert pair["cache_vs_uncached_max_abs_diff"] <= 1e-6
        assert pair["cache_entries"] < pair["cache_lookups"]  # shared user/history/candidate segments reused
        assert pair["speedup"] == pytest.approx(pair["latency_ms_full"] / pair["latency_ms_late"])
        for name, run_dir in (("full", full_dir), ("late", late_dir)):
            assert pair[f"test_auc_{name}"] == json.loads((run_dir / "metrics.json").read_text())["test/auc"]
        for name in ("auc", "user_auc", "test_auc"):
            assert pair[f"{name}_kept_pct"] == pytest.approx(100 * pair[f"{name}_late"] / pair[f"{name}_full"])
    assert result["pairs"][0]["positives"] == result["pairs"][1]["positives"]  # the same requests for every pair

    summary = result["summary"]
    assert summary["n_pairs"] == 2 and set(summary) == {"n_pairs", *SUMMARY_KEYS}
    for key in SUMMARY_KEYS:
        values = np.array([pair[key] for pair in result["pairs"]])
        assert summary[key]["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert summary[key]["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert summary["test_auc_late"]["std"] > 0  # two different models: a std of 0 would be no check at all

    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]  # header, rows
    assert [line.split(" | ")[0] for line in table] == ["| pair", "| 0", "| 1", "| mean ± std (n=2)"]


def test_benchmark_refuses_unequal_run_counts(tmp_path):
    from benchmarks.late_interaction import main

    out = tmp_path / "late.json"
    with pytest.raises(SystemExit) as refused:  # refused before any run is loaded: the dirs need not exist
        main(["--late-run", "a", "b", "--full-run", "c", "--out", str(out)])
    assert refused.value.code == (
        "--late-run has 2 run dirs but --full-run has 1: give one full run per late run, in the same order"
    )
    assert not out.exists()


def test_late_request_rows_equal_the_test_rows_under_loo(ml100k_dir, tmp_path):
    """Under `loo` a test event follows all of its user's training and validation events, so the recommender's
    request for that point (`before=TEST`, segments included) must equal the test set's row exactly."""
    from m6rec.data.datamodules.late_segments import LateSegmentDataModule

    dm = LateSegmentDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), split="loo", max_length=128)
    dm.setup("test")
    test = dm.datasets["test"]
    for row in range(0, len(test), max(1, len(test) // 5)):
        expected = test[row]
        (request,) = dm.request_rows(int(expected["user_id"]), [int(expected["item_id"])], before=TEST)
        for key in ("input_ids", "segment_lengths", "segment_roles"):
            np.testing.assert_array_equal(request[key], expected[key])
        assert request["segment_lengths"].sum() == len(request["input_ids"]) and len(request["segment_roles"]) > 3


@pytest.mark.parametrize("override", ["task.layers_online=1", "model.layers_online=1"])
def test_layers_online_outside_ctr_is_a_config_error(override, tmp_path):
    """Only the CTR task config has `layers_online`: elsewhere setting it is refused when the config composes."""
    from hydra.errors import ConfigCompositionException

    from tests.helpers import compose_config

    with pytest.raises(ConfigCompositionException, match=rf"Could not override '{override.split('=')[0]}'"):
        compose_config(["experiment=rating_lora", override], tmp_path)
