"""Late interaction vs the full model on real MovieLens-100K: speed-up per ranking request, and AUC kept.

Both GPT-2 scorers start from the same random weights and train on the same CTR samples (random 80/10/10 split,
label = rating >= 4) for `--steps` steps. Then each of `--users` test users is one request ranking `--candidates`
items: their test items (at most half the list; label = rating >= 4) plus unseen items sampled uniformly (items
they never rated in any split; label 0). The request's history is the user's newest training ratings.

Latency per request, excluding tokenization (both read pre-tokenized ids): full = pad the prompts, run all blocks;
late = look the segments' lower states up in the cache (built offline, timed apart as `cache_build_s`), concatenate,
run the top `--layers-online` blocks. Requests alternate full/late so both see the same CPU load.

    .venv/bin/python benchmarks/late_interaction.py --steps 200 --layers 6 --layers-online 1 --users 50
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc
from transformers import get_linear_schedule_with_warmup

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.data import BehaviourLogDataModule  # noqa: E402
from m6rec.data.behaviour_log import pad_collate  # noqa: E402
from m6rec.data.encode import SegmentEncoder  # noqa: E402
from m6rec.data.history import recent_training_history  # noqa: E402
from m6rec.data.render import prompt_segments  # noqa: E402
from m6rec.data.splits import TEST, TRAIN  # noqa: E402
from m6rec.models.backbone import build_backbone  # noqa: E402
from m6rec.models.late_interaction import LateInteractionScorer, SegmentStateCache, tokenize_late  # noqa: E402
from m6rec.models.scorer import TextScorer  # noqa: E402

Parts = list[tuple[str, str, list[str], str]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT / "data"), help="dataset + tokenizer cache (ml-100k inside)")
    p.add_argument("--root", default=None, help="a local ML-100K copy (GroupLens u.* files) instead of data-dir's")
    p.add_argument("--steps", type=int, default=200, help="training steps of each model (one pass, no repeats)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=6, help="GPT-2 blocks L")
    p.add_argument("--layers-online", type=int, default=1, help="top blocks run per request (L - L')")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--users", type=int, default=50, help="ranking requests (test users)")
    p.add_argument("--candidates", type=int, default=100, help="items ranked per request")
    p.add_argument("--max-length", type=int, default=64, help="token budget of a prompt (data.max_length)")
    p.add_argument("--history-len", type=int, default=10)
    p.add_argument("--warmup-requests", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "late_interaction.json"))
    return p.parse_args(argv)


def encode_full(parts: Parts, encoder: SegmentEncoder) -> list[np.ndarray]:
    """Token ids of the joint prompts, budgeted like the data module does."""
    encoder.prefetch(s for part in parts for s in prompt_segments(*part, encoder.templates))
    return [encoder.encode(*part) for part in parts]


def train(model: torch.nn.Module, loss_of: Callable[[int], torch.Tensor], steps: int, lr: float) -> dict[str, float]:
    """AdamW + linear warm-up (10 %) and decay; `loss_of(step)` computes the loss of batch `step`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(steps):
        loss = loss_of(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    tail = losses[-max(1, steps // 10) :]
    return {"train_s": time.perf_counter() - start, "first_loss": losses[0], "last_loss": float(np.mean(tail))}


def ranking_requests(
    dm: BehaviourLogDataModule, samples: pd.DataFrame, users: int, candidates: int, rng: np.random.Generator
) -> tuple[list[Parts], list[np.ndarray]]:
    """(parts, labels) of each request: a test user's test items (≤ half) + unseen items, newest training history."""
    split = samples["split"].to_numpy()
    test = samples[split == TEST]
    chosen = rng.choice(np.sort(test["user_id"].unique()), size=users, replace=False)
    all_items = np.sort(dm.tables.items["item_id"].to_numpy())
    rows, labels = [], []
    for user in chosen:
        own = test[test["user_id"] == user]
        own = own.iloc[rng.permutation(len(own))[: candidates // 2]]
        seen = samples.loc[samples["user_id"] == user, "item_id"].to_numpy()
        unseen = rng.choice(np.setdiff1d(all_items, seen), size=candidates - len(own), replace=False)
        rows.append(pd.DataFrame({"user_id": user, "item_id": np.concatenate([own["item_id"].to_numpy(), unseen])}))
        labels.append(np.concatenate([own["label"].to_numpy(np.float32), np.zeros(len(unseen), np.float32)]))
    requests = pd.concat(rows, ignore_index=True)
    # History at request time: the newest training ratings (the request comes after every logged event).
    later = requests.assign(rating=0.0, timestamp=int(samples["timestamp"].max()) + 1)
    frame = pd.concat([samples[["user_id", "item_id", "rating", "timestamp"]], later], ignore_index=True)
    is_train = np.concatenate([split == TRAIN, np.zeros(len(later), bool)])
    histories = recent_training_history(frame, is_train, dm.hparams.history_len)[len(samples) :]
    parts = dm._parts(requests, histories)
    return [parts[k * candidates : (k + 1) * candidates] for k in range(users)], labels


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def mean_user_auc(scores: list[torch.Tensor], labels: list[np.ndarray]) -> float | None:
    """Mean AUC of the requests that have both a positive and a negative (None when none has)."""
    aucs = [float(binary_auroc(s, torch.from_numpy(y).long())) for s, y in zip(scores, labels, strict=True)
            if 0 < y.sum() < len(y)]  # fmt: skip
    return float(np.mean(aucs)) if aucs else None


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    dm = BehaviourLogDataModule(
        data_dir=args.data_dir, root=args.root, history_len=args.history_len, max_length=args.max_length
    )
    samples = dm.samples()
    train_rows = np.flatnonzero(samples["split"].to_numpy() == TRAIN)
    train_rows = rng.permutation(train_rows)[: args.steps * args.batch_size]
    histories = recent_training_history(samples, (samples["split"] == TRAIN).to_numpy(), args.history_len)
    train_parts = dm._parts(samples.iloc[train_rows], [histories[r] for r in train_rows])
    encoder = SegmentEncoder(dm.tokenizer, dm.templates, args.max_length)
    full_ids, late_segs = encode_full(train_parts, encoder), tokenize_late(train_parts, encoder, args.max_length)
    train_labels = torch.from_numpy(samples["label"].to_numpy(np.float32)[train_rows])
    request_parts, request_labels = ranking_requests(dm, samples, args.users, args.candidates, rng)
    request_full = [encode_full(parts, encoder) for parts in request_parts]
    request_late = [tokenize_late(parts, encoder, args.max_length) for parts in request_parts]
    data_s = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    config = {"model_type": "gpt2", "n_layer": args.layers, "n_embd": args.hidden, "n_head": args.heads,
              "n_positions": 256, "activation_function": "gelu", "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0, "bos_token_id": 1, "eos_token_id": 1}  # fmt: skip
    backbone = build_backbone(len(dm.tokenizer), config)
    full = TextScorer(copy.deepcopy(backbone), args.hidden)
    late = LateInteractionScorer(copy.deepcopy(backbone), args.layers_online)
    late.head.load_state_dict(full.head.state_dict())
    collate = pad_collate(dm.tokenizer.pad_token_id)

    def batch_of(ids: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return collate([{"input_ids": x, "label": 0.0, "user_id": 0, "item_id": 0} for x in ids])

    def full_loss(step: int) -> torch.Tensor:
        rows = slice(step * args.batch_size, (step + 1) * args.batch_size)
        b = batch_of(full_ids[rows])
        return F.binary_cross_entropy_with_logits(full(b["input_ids"], b["attention_mask"]), train_labels[rows])

    def late_loss(step: int) -> torch.Tensor:
        rows = slice(step * args.batch_size, (step + 1) * args.batch_size)
        return F.binary_cross_entropy_with_logits(late(late_segs[rows]), train_labels[rows])

    full_train, late_train = train(full, full_loss, args.steps, args.lr), train(late, late_loss, args.steps, args.lr)

    cache = SegmentStateCache(late)
    occurrences = [ids for request in request_late for sample in request for _, ids in sample]
    _, cache_build_s = timed(lambda: cache.add(occurrences))

    def full_request(k: int) -> torch.Tensor:
        b = batch_of(request_full[k])
        return full(b["input_ids"], b["attention_mask"])

    def late_request(k: int) -> torch.Tensor:
        return cache.score(request_late[k])

    full_scores, late_scores, full_ms, late_ms = [], [], [], []
    with torch.inference_mode():
        for k in range(min(args.warmup_requests, args.users)):
            full_request(k)
            late_request(k)
        for k in range(args.users):
            for request, scores, ms in ((full_request, full_scores, full_ms), (late_request, late_scores, late_ms)):
                logits, seconds = timed(lambda request=request, k=k: request(k))
                scores.append(logits)
                ms.append(1000 * seconds)
        cache_diff = float((late(request_late[0]) - late_scores[0]).abs().max())  # the same request, uncached

    labels = torch.from_numpy(np.concatenate(request_labels)).long()
    result = {
        "speedup": statistics.median(full_ms) / statistics.median(late_ms),
        "auc_full": float(binary_auroc(torch.cat(full_scores), labels)),
        "auc_late": float(binary_auroc(torch.cat(late_scores), labels)),
        "user_auc_full": mean_user_auc(full_scores, request_labels),
        "user_auc_late": mean_user_auc(late_scores, request_labels),
        "layers_online": args.layers_online,
        "layers": args.layers,
        "hidden": args.hidden,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "latency_ms_full": statistics.median(full_ms),
        "latency_ms_late": statistics.median(late_ms),
        "latency_ms_full_mean": statistics.fmean(full_ms),
        "latency_ms_late_mean": statistics.fmean(late_ms),
        "cache_build_s": cache_build_s,
        "cache_entries": len(cache),
        "cache_lookups": len(occurrences),
        "cache_vs_uncached_max_abs_diff": cache_diff,
        "users": args.users,
        "candidates": args.candidates,
        "positives": int(labels.sum()),
        "tokens_per_request_full": float(np.mean([sum(map(len, r)) for r in request_full])),
        "tokens_per_request_late": float(np.mean([sum(len(i) for s in r for _, i in s) for r in request_late])),
        "train_full": full_train,
        "train_late": late_train,
        "threads": args.threads,
        "seed": args.seed,
        "data_s": data_s,
        "command": "python benchmarks/late_interaction.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written {out}")
    return result


def print_table(r: dict) -> None:
    rows = [("full", r["layers"], r["auc_full"], r["user_auc_full"], r["latency_ms_full"], r["train_full"]["train_s"]),
            ("late", r["layers_online"], r["auc_late"], r["user_auc_late"], r["latency_ms_late"],
             r["train_late"]["train_s"])]  # fmt: skip
    print(f"| model | blocks online | AUC | mean user AUC | ms / request ({r['candidates']} items) | train s |")
    print("|---|---|---|---|---|---|")
    for name, blocks, auc, user_auc, ms, train_s in rows:
        user_auc = "n/a" if user_auc is None else f"{user_auc:.4f}"
        print(f"| {name} | {blocks} of {r['layers']} | {auc:.4f} | {user_auc} | {ms:.1f} | {train_s:.0f} |")
    print(f"speed-up {r['speedup']:.2f}x, AUC kept {100 * r['auc_late'] / r['auc_full']:.1f} %, cache build "
          f"{r['cache_build_s']:.2f} s for {r['cache_entries']} segments ({r['cache_lookups']} lookups)")  # fmt: skip


if __name__ == "__main__":
    main()
