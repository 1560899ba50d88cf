"""Full-catalogue ranking speed: m6rec's chunked one-pass `target_ranks` vs a dense baseline, same inputs.

    python benchmarks/full_rank.py                       # 1.7K / 27K / 100K items, 1 thread and the default
    python benchmarks/full_rank.py --items 1682 --threads 1

Inputs: `--users` L2-normalised 128-d queries (the retrieval task's embedding size) scored in evaluation batches of
`--batch`, each with one target and `--seen` excluded items. Dense baseline: `q @ items.T`, excluded items and the
target masked to -inf, rank = count of scores >= the target's (what a one-matrix evaluator does; memory B x N).
Both give identical ranks (checked). Reported: users per second of wall time and per CPU-second (user + system of
this process: steadier on a shared machine; with n threads it is up to n × lower), median of `--repeats` timings,
the two methods interleaved batch by batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.metrics.ranking import target_ranks  # noqa: E402

ITEM_COUNTS = (1682, 27_278, 100_000)  # ML-100K, ML-20M, a 100K catalogue


def dense_ranks(queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor):
    """The baseline: one (B, N) score matrix, masked, ranked by comparison with the target's score."""
    scores = queries @ items.T
    rows = torch.arange(len(queries))
    target_scores = scores[rows, targets].clone()
    valid = excluded >= 0
    scores[rows[:, None].expand_as(excluded)[valid], excluded[valid]] = float("-inf")
    scores[rows, targets] = float("-inf")
    return (scores >= target_scores[:, None]).sum(1)


def make_inputs(n_users: int, n_items: int, n_seen: int, dim: int = 128, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random unit queries and items, a random target per user, `n_seen` random excluded items (never the target)."""
    g = torch.Generator().manual_seed(seed)
    queries = torch.nn.functional.normalize(torch.randn(n_users, dim, generator=g), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(n_items, dim, generator=g), dim=-1)
    targets = torch.randint(n_items, (n_users,), generator=g)
    excluded = torch.randint(n_items, (n_users, n_seen), generator=g)
    excluded[excluded == targets[:, None]] = -1
    return queries, items, targets, excluded


def users_per_s(
    rank_fns: dict, inputs: tuple[torch.Tensor, ...], batch: int, repeats: int
) -> dict[str, tuple[float, float, Tensor]]:
    """Per ranking function: median users per wall second and per CPU-second of ranking every user in batches of
    `batch` (one untimed warm-up round), and the ranks. Interleaved: each batch is ranked by every function in turn
    (rotating order), so load changes on a shared machine hit all of them alike."""
    queries, items, targets, excluded = inputs
    walls = {name: [0.0] * (repeats + 1) for name in rank_fns}
    cpus = {name: [0.0] * (repeats + 1) for name in rank_fns}
    ranks: dict[str, list[Tensor]] = {}
    turn = 0
    for repeat in range(repeats + 1):
        ranks = {name: [] for name in rank_fns}
        for i in range(0, len(queries), batch):
            names = list(rank_fns)
            turn += 1
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                wall, cpu = time.perf_counter(), time.process_time()
                rows = slice(i, i + batch)
                ranks[name].append(rank_fns[name](queries[rows], items, targets[rows], excluded[rows]))
                walls[name][repeat] += time.perf_counter() - wall
                cpus[name][repeat] += time.process_time() - cpu
    n = len(queries)
    return {
        name: (n / statistics.median(walls[name][1:]), n / statistics.median(cpus[name][1:]), torch.cat(ranks[name]))
        for name in rank_fns
    }


def benchmark(item_counts=ITEM_COUNTS, threads=(1, None), users=2048, batch=256, seen=50, repeats=3) -> dict:
    """{threads: {n_items: {"chunked": users/s, "dense": users/s, "chunked_cpu": users/CPU-s, "dense_cpu": ...}}};
    raises if the two rankings ever differ."""
    default_threads = torch.get_num_threads()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for n in threads:
        torch.set_num_threads(n or default_threads)
        label = str(n or f"default ({default_threads})")
        out[label] = {}
        for n_items in item_counts:
            inputs = make_inputs(users, n_items, seen)
            measured = users_per_s({"chunked": target_ranks, "dense": dense_ranks}, inputs, batch, repeats)
            (chunked, chunked_cpu, ours), (dense, dense_cpu, theirs) = measured["chunked"], measured["dense"]
            if not torch.equal(ours, theirs):
                raise AssertionError(f"{n_items} items: chunked and dense ranks differ")
            out[label][str(n_items)] = {
                "chunked": round(chunked),
                "dense": round(dense),
                "chunked_cpu": round(chunked_cpu),
                "dense_cpu": round(dense_cpu),
            }
    torch.set_num_threads(default_threads)
    return out


def print_table(results: dict) -> None:
    print(
        "| threads | items | chunked users/s | dense users/s | ratio | chunked users/CPU-s | dense users/CPU-s "
        "| ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, by_items in results.items():
        for n_items, r in by_items.items():
            wall, cpu = r["chunked"] / r["dense"], r["chunked_cpu"] / r["dense_cpu"]
            print(
                f"| {label} | {int(n_items):,} | {r['chunked']:,} | {r['dense']:,} | {wall:.2f} "
                f"| {r['chunked_cpu']:,} | {r['dense_cpu']:,} | {cpu:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=list(ITEM_COUNTS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = torch's default")
    parser.add_argument("--users", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seen", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    threads = [t or None for t in args.threads]
    results = benchmark(args.items, threads, args.users, args.batch, args.seen, args.repeats)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
