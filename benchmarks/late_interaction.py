"""Late interaction vs the full model: speed-up per ranking request, and AUC kept — from pairs of trained runs.

Train the same model late and full, once per seed, then compare each seed's pair (MovieLens-100K, 6-block 128-d GPT-2):

    python run.py -m experiment=ctr_late task.layers_online=1,null seed=0,1,2
    python benchmarks/late_interaction.py --late-run <job 0> <job 1> <job 2> --full-run <job 3> <job 4> <job 5>

(jobs 0-2 of the multirun are the late runs of seeds 0, 1, 2, jobs 3-5 the full ones). Runs pair by position: the i-th
late run with the i-th full run, both on the same data. Each of `--users` test users is one request ranking
`--candidates` items: their test items (at most half the list; label = the run's CTR label) plus items they never rated
in any split (label 0); the requests come from a fixed `--seed`, so every pair ranks the same ones and pairs differ only
in their trained models. Every request is built by the recommender's path (`request_rows(..., before=VALID)`: the user's
newest training ratings as history) and scored by each run's own model. Latency per request excludes tokenization: full
= the padded prompts through every block; late = the segments' lower-block states looked up in a `SegmentStateCache`
(built offline, timed apart as `cache_build_s`), concatenated, the top `layers_online` blocks. Requests alternate
full/late so both see the same CPU load. The runs' own test-set AUCs (metrics.json) are reported beside the ranking
AUCs. The JSON holds each pair's measures (`pairs`) and their mean ± std over pairs (`summary`); the table prints one
line per pair and the mean ± std.
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
    p.add_argument(
        "--late-run", nargs="+", required=True, help="run dirs with task.layers_online set (e.g. one per seed)"
    )
    p.add_argument(
        "--full-run", nargs="+", required=True, help="the same runs with task.layers_online=null, in the same order"
    )
    p.add_argument("--users", type=int, default=300, help="ranking requests (test users)")
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
    test_users = np.sort(test["user_id"].unique())
    if users > len(test_users):
        raise SystemExit(f"--users {users}: the test split has only {len(test_users)} users")
    requests = []
    for user in rng.choice(test_users, size=users, replace=False).tolist():
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


def measure_pair(late_run: str, full_run: str, args: argparse.Namespace) -> dict:
    """Speed-up and AUCs of one late run against one full run of the same data, on the `args` ranking requests."""
    _, late_dm, late_system = load_run(late_run)
    _, full_dm, full_system = load_run(full_run)
    late, full = late_system.model, full_system.model
    if not isinstance(late, LateInteractionScorer) or isinstance(full, LateInteractionScorer):
        raise SystemExit(
            f"--late-run {late_run} needs task.layers_online set, --full-run {full_run} needs task.layers_online=null"
        )
    if late_dm.fingerprint != full_dm.fingerprint:  # same log, split and labels: the same test set for both
        raise SystemExit(
            f"--late-run {late_run} and --full-run {full_run}: different data "
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
        "test_auc_full": run_test_auc(full_run),
        "test_auc_late": run_test_auc(late_run),
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
        "late_run": str(late_run),
        "full_run": str(full_run),
    }
    for name in ("auc", "user_auc", "test_auc"):  # late as a share of full, in %
        late_value, full_value = result[f"{name}_late"], result[f"{name}_full"]
        result[f"{name}_kept_pct"] = None if None in (late_value, full_value) else 100 * late_value / full_value
    return result


SUMMARY_KEYS = (
    "speedup",
    "latency_ms_full",
    "latency_ms_late",
    "test_auc_late",
    "test_auc_full",
    "test_auc_kept_pct",
    "auc_late",
    "auc_full",
    "auc_kept_pct",
    "user_auc_late",
    "user_auc_full",
    "user_auc_kept_pct",
)


def summarize(pairs: list[dict]) -> dict:
    """{key: {mean, std}} over pairs for each of SUMMARY_KEYS: sample std (0 for one pair); None where a pair has
    None (a run without metrics.json, no request with both labels)."""
    summary: dict = {"n_pairs": len(pairs)}
    for key in SUMMARY_KEYS:
        values = [pair[key] for pair in pairs]
        if None in values:
            summary[key] = {"mean": None, "std": None}
        else:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[key] = {"mean": statistics.fmean(values), "std": std}
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if len(args.late_run) != len(args.full_run):
        raise SystemExit(
            f"--late-run has {len(args.late_run)} run dirs but --full-run has {len(args.full_run)}: "
            "give one full run per late run, in the same order"
        )
    torch.set_num_threads(args.threads)
    pairs = [measure_pair(late, full, args) for late, full in zip(args.late_run, args.full_run, strict=True)]
    result = {
        "summary": summarize(pairs),
        "pairs": pairs,
        "command": "python benchmarks/late_interaction.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written {out}")
    return result


DIGITS = {"speedup": 2, "latency_ms_full": 1, "latency_ms_late": 1, "auc_kept_pct": 1, "user_auc_kept_pct": 1}
DIGITS["test_auc_kept_pct"] = 1  # every other key: 4


def number(key: str, value: float | None) -> str:
    return "n/a" if value is None else f"{value:.{DIGITS.get(key, 4)}f}"


def table_cells(fmt: Callable[[str], str]) -> str:
    """Speed-up, latencies, then each AUC as 'late / full (kept %)', each value written by `fmt(key)`."""
    aucs = " | ".join(
        f"{fmt(f'{name}_late')} / {fmt(f'{name}_full')} ({fmt(f'{name}_kept_pct')} %)"
        for name in ("auc", "user_auc", "test_auc")
    )
    return f"{fmt('speedup')}x | {fmt('latency_ms_full')} → {fmt('latency_ms_late')} | {aucs} |"


def print_table(result: dict) -> None:
    """One markdown line per pair, then one of the mean ± std over pairs."""
    first, summary = result["pairs"][0], result["summary"]
    print(
        f"| pair | blocks online | speed-up | ms / request full → late ({first['candidates']} items) | ranking AUC "
        "late / full (kept) | mean user AUC late / full (kept) | test-set AUC (run) late / full (kept) |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, pair in enumerate(result["pairs"]):
        cells = table_cells(lambda key, pair=pair: number(key, pair[key]))
        print(f"| {k} | {pair['layers_online']} of {pair['layers']} | {cells}")
    cells = table_cells(lambda key: f"{number(key, summary[key]['mean'])} ± {number(key, summary[key]['std'])}")
    print(f"| mean ± std (n={summary['n_pairs']}) | | {cells}")
    print(
        f"cache (pair 0): built in {first['cache_build_s']:.2f} s for {first['cache_entries']} segments "
        f"({first['cache_lookups']} lookups); {first['users']} requests, {first['positives']} positives"
    )


if __name__ == "__main__":
    main()
