"""Late interaction: segment roles, budget, exact caching, equivalence with plain GPT-2, training, cache reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m6rec.data import BehaviourLogDataModule
from m6rec.data.encode import SegmentEncoder
from m6rec.data.history import recent_training_history
from m6rec.data.render import Templates
from m6rec.data.splits import TRAIN
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

GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 128,
        "activation_function": "gelu", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, which also keeps them immune to oversubscription on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixture_data(ml100k_dir, tmp_path_factory):
    """(segments of every fixture sample, labels, samples frame, parts, tokenizer) with full histories."""
    dm = BehaviourLogDataModule(data_dir=str(tmp_path_factory.mktemp("data")), root=str(ml100k_dir), max_length=128)
    samples = dm.samples()
    histories = recent_training_history(samples, (samples["split"] == TRAIN).to_numpy(), 10)
    parts = dm._parts(samples, histories)
    encoder = SegmentEncoder(dm.tokenizer, dm.templates, 128)
    return tokenize_late(parts, encoder, 128), samples["label"].to_numpy(np.float32), samples, parts, dm.tokenizer


def make_model(vocab_size: int, layers_online: int, seed: int = 0) -> LateInteractionScorer:
    torch.manual_seed(seed)
    return LateInteractionScorer(build_backbone(vocab_size, GPT2), layers_online).eval()


def test_late_segments_split_items_from_context():
    segments = late_segments("A 49-year-old male writer", "he", ["Toy Story (5/5)", "Heat (3/5)"], "Kolya (1996)",
                             Templates())  # fmt: skip
    assert segments == [(CONTEXT, "A 49-year-old male writer rated"), (HISTORY, " Toy Story (5/5)"),
                        (HISTORY, " Heat (3/5)"), (CONTEXT, ". Will he enjoy"), (CANDIDATE, " Kolya (1996)"),
                        (CONTEXT, "?")]  # fmt: skip
    empty = late_segments("A user", "they", [], "Heat (1995)", Templates())
    assert empty == [(CONTEXT, "A user rated nothing yet. Will they enjoy"), (CANDIDATE, " Heat (1995)"),
                     (CONTEXT, "?")]  # fmt: skip


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


def test_benchmark_runs_end_to_end_on_the_fixture(ml100k_dir, tmp_path):
    from benchmarks.late_interaction import main

    out = tmp_path / "late.json"
    result = main(["--root", str(ml100k_dir), "--data-dir", str(tmp_path), "--steps", "2", "--batch-size", "8",
                   "--layers", "2", "--hidden", "32", "--heads", "2", "--users", "3", "--candidates", "10",
                   "--warmup-requests", "1", "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == result
    assert (result["layers"], result["layers_online"], result["users"], result["candidates"]) == (2, 1, 3, 10)
    assert result["cache_vs_uncached_max_abs_diff"] <= 1e-6
    assert result["cache_entries"] < result["cache_lookups"]  # shared user/history/candidate segments reused
    assert result["speedup"] == pytest.approx(result["latency_ms_full"] / result["latency_ms_late"])
    assert 0.0 <= result["auc_full"] <= 1.0 and 0.0 <= result["auc_late"] <= 1.0
