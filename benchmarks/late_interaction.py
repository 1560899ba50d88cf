"""Late interaction vs the full model: speed-up per ranking request, and AUC kept — from two trained runs.

Train the same model twice, late and full, then compare them (MovieLens-100K, 6-block 128-d GPT-2):

    python run.py -m experiment=ctr_late task.layers_online=1,null
    python benchmarks/late_interaction.py --late-run <ctr_late run dir> --full-run <the layers_online=null run dir>

Each of `--users` test users is one request ranking `--candidates` items: their test items (at most half the list;
label = the run's CTR label) plus items they never rated in any split (label 0). Every request is built by the
recommender's path (`request_rows(..., before=VALID)`: the user's newest training ratings as history) and scored by
each run's own model. Latency per request excludes tokenization: full = the padded prompts through every block; late =
the segments' lower-block states looked up in a `SegmentStateCache` (built offline, timed apart as `cache_build_s`),
concatenated, the top `layers_online` blocks. Requests alternate full/late so both see the same CPU load.
The runs' own test-set AUCs (metrics.json) are reported beside the ranking AUCs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule  # noqa: E402
from m6rec.data.protocol.splits import TEST, VALID  # noqa: E402
from m6rec.models.late_interaction import LateInteractionScorer, SegmentStateCache  # noqa: E402
from m6rec.recommend import load_run  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--late-run", required=True, help="run dir of experiment=ctr_late (task.layers_online set)")
    p.add_argument("--full-run", required=True, help="run dir of the same experiment with task.layers_online=null")
    p.add_argument("--users", type=int, default=50, help="ranking requests (test users)")
    p.add_argument("--candidates", type=int, default=100, help="items ranked per request")
    p.add_argument("--warmup-requests", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "late_interaction.json"))
    return p.parse_args(argv)


def ranking_requests(
    dm: BehaviourLogDataModule, users: int, candidates: int, rng: np.random.Generator
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(user, item ids, labels) per request: a test user's test items (≤ half, their CTR labels) + unseen items."""
    samples = dm.samples()
    test = samples[samples["split"].to_numpy() == TEST]
    all_items = np.sort(dm.tables.items["item_id"].to_numpy())
    requests = []
    for user in rng.choice(np.sort(test["user_id"].unique()), size=users, replace=False).tolist():
        own = test[test["user_id"] == user]
        own = own.iloc[rng.permutation(len(own))[: candidates // 2]]
        seen = samples.loc[samples["user_id"] == user, "item_id"].to_numpy()
        unseen = rng.choice(np.setdiff1d(all_items, seen), size=candidates - len(own), replace=False)
        labels = np.concatenate([own["label"].to_numpy(np.float32), np.zeros(len(unseen), np.float32)])
        requests.append((int(user), np.concatenate([own["item_id"].to_numpy(), unseen]), labels))
    return requests


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def mean_user_auc(scores: list[torch.Tensor], labels: list[np.ndarray]) -> float | None:
    """Mean AUC of the requests that have both a positive and a negative (None when none has)."""
    aucs = [
        float(binary_auroc(s, torch.from_numpy(y).long()))
        for s, y in zip(scores, labels, strict=True)
        if 0 < y.sum() < len(y)
    ]
    return float(np.mean(aucs)) if aucs else None


def run_test_auc(run_dir: str) -> float | None:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()).get("test/auc") if path.is_file() else None


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    _, late_dm, late_system = load_run(args.late_run)
    _, full_dm, full_system = load_run(args.full_run)
    late, full = late_system.model, full_system.model
    if not isinstance(late, LateInteractionScorer) or isinstance(full, LateInteractionScorer):
        raise SystemExit("--late-run needs task.layers_online set, --full-run needs task.layers_online=null")
    if late_dm.fingerprint != full_dm.fingerprint:  # same log, split and labels: the same test set for both
        raise SystemExit(
            f"--late-run {args.late_run} and --full-run {args.full_run}: different data "
            f"(fingerprints {late_dm.fingerprint} vs {full_dm.fingerprint})"
        )

    t0 = time.perf_counter()
    requests = ranking_requests(late_dm, args.users, args.candidates, np.random.default_rng(args.seed))
    collate_full, collate_late = full_dm.collate_fn(), late_dm.collate_fn()
    full_batches = [collate_full(full_dm.request_rows(u, items.tolist(), VALID)) for u, items, _ in requests]
    late_requests = [collate_late(late_dm.request_rows(u, i.tolist(), VALID))["segments"] for u, i, _ in requests]
    data_s = time.perf_counter() - t0

    cache = SegmentStateCache(late)
    occurrences = [ids for request in late_requests for sample in request for _, ids in sample]
    _, cache_build_s = timed(lambda: cache.add(occurrences))

    def full_request(k: int) -> torch.Tensor:
        return full(full_batches[k]["input_ids"], full_batches[k]["attention_mask"])

    def late_request(k: int) -> torch.Tensor:
        return cache.score(late_requests[k])

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
        cache_diff = float((late(late_requests[0]) - late_scores[0]).abs().max())  # the same request, uncached

    request_labels = [labels for _, _, labels in requests]
    labels = torch.from_numpy(np.concatenate(request_labels)).long()
    result = {
        "speedup": statistics.median(full_ms) / statistics.median(late_ms),
        "auc_full": float(binary_auroc(torch.cat(full_scores), labels)),
        "auc_late": float(binary_auroc(torch.cat(late_scores), labels)),
        "user_auc_full": mean_user_auc(full_scores, request_labels),
        "user_auc_late": mean_user_auc(late_scores, request_labels),
        "test_auc_full": run_test_auc(args.full_run),
        "test_auc_late": run_test_auc(args.late_run),
        "layers_online": late.layers_online,
        "layers": len(late.backbone.h),
        "hidden": late.backbone.config.hidden_size,
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
        "tokens_per_request_full": float(np.mean([int(b["attention_mask"].sum()) for b in full_batches])),
        "threads": args.threads,
        "seed": args.seed,
        "data_s": data_s,
        "late_run": str(args.late_run),
        "full_run": str(args.full_run),
        "command": "python benchmarks/late_interaction.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written {out}")
    return result


def print_table(r: dict) -> None:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    print(
        f"| model | blocks online | ranking AUC | mean user AUC | test-set AUC (run) | ms / request "
        f"({r['candidates']} items) |"
    )
    print("|---|---|---|---|---|---|")
    for name, blocks in (("full", r["layers"]), ("late", r["layers_online"])):
        print(
            f"| {name} | {blocks} of {r['layers']} | {r[f'auc_{name}']:.4f} | {fmt(r[f'user_auc_{name}'])} | "
            f"{fmt(r[f'test_auc_{name}'])} | {r[f'latency_ms_{name}']:.1f} |"
        )
    print(
        f"speed-up {r['speedup']:.2f}x, ranking AUC kept {100 * r['auc_late'] / r['auc_full']:.1f} %, cache build "
        f"{r['cache_build_s']:.2f} s for {r['cache_entries']} segments ({r['cache_lookups']} lookups)"
    )


if __name__ == "__main__":
    main()
