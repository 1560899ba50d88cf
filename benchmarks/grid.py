"""One hyperparameter grid searched alike, in parallel, for several rows of quality.py: every point on --grid-seeds,
each row's point with the best mean validation value, then that point on --seeds. Many jobs at once suit a GPU or a
many-core machine; on this 2-core CPU use quality.py.

    python benchmarks/grid.py --models sasrec_cap100_p10 sasrec_hybrid_from_text_cap100_p10 \\
        --grid task.optimizer.lr=0.0005,0.001,0.002,0.004,0.008 model.dropout=0.1,0.2,0.5 --grid-seeds 0 1 2 \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 15 --out benchmarks/results/p1_grid_h200.json \\
        --extra trainer.accelerator=gpu trainer.precision=32-true trainer.deterministic=false

Runs go where quality.py puts them (`<log dir>/quality/<protocol>/<model>/<trial>/seed<S>`); a row's `before` job
runs first, once per seed, with the same --extra. One record per (model, point, seed): quality.py's record plus
`point`, `val` (the validation value the choice is made on) and `chosen` (the row's chosen point).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402


def parse_grid(items: list[str]) -> list[list[str]]:
    """`["a=1,2", "b=x"]` → every combination as override lists: `[["a=1", "b=x"], ["a=2", "b=x"]]`."""
    axes = []
    for item in items:
        key, _, values = item.partition("=")
        if not key or not values:
            raise SystemExit(f"--grid {item!r}: expected key=value1,value2,...")
        axes.append([f"{key}={value}" for value in values.split(",")])
    return [list(point) for point in itertools.product(*axes)]


def search(
    rows: list[dict],
    points: list[list[str]],
    grid_seeds: list[int],
    seeds: list[int],
    extra: list[str],
    log_dir: Path,
    jobs: int,
    reuse: bool,
) -> list[dict]:
    """Run the grid for every row, choose each row's point by mean validation value over `grid_seeds`, run it on the
    `seeds` not yet run; one record per run, `chosen` marking each row's chosen point."""
    with ThreadPoolExecutor(jobs) as pool:
        befores = {
            quality.before_dir(log_dir, row, s): (row, s)
            for row in rows
            if row.get("before")
            for s in sorted({*grid_seeds, *seeds})
        }
        done = pool.map(lambda d: quality.run_job(d, befores[d][0]["before"], extra, befores[d][1], reuse), befores)
        quality.BEFORE_RUNS.update(zip(befores, done, strict=True))  # run_once then reads them instead of rerunning

        def run(row: dict, point: list[str], seed: int) -> dict:
            metrics = quality.run_once(row, [*point, *extra], quality.trial_name(point), seed, log_dir, reuse)
            return {**quality.record(row, seed, metrics), "point": point, "val": quality.validation_value(metrics)}

        grid = [pool.submit(run, row, p, s) for row in rows for p in points for s in grid_seeds]
        records = [f.result() for f in grid]
        chosen, more = {}, []
        for row in rows:
            mean_val = {
                tuple(p): statistics.mean(r["val"] for r in records if r["model"] == row["model"] and r["point"] == p)
                for p in points
            }
            chosen[row["model"]] = max(mean_val, key=lambda p: quality.validation_sign(row) * mean_val[p])
            print(
                f"{row['model']}: mean validation over seeds {grid_seeds}: "
                + ", ".join(f"{' '.join(p)} {v:.4f}" for p, v in mean_val.items())
                + f"; chosen {' '.join(chosen[row['model']])}"
            )
            point = list(chosen[row["model"]])
            more += [pool.submit(run, row, point, s) for s in seeds if s not in grid_seeds]
        records += [f.result() for f in more]
    return [{**r, "chosen": tuple(r["point"]) == chosen[r["model"]]} for r in records]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="row names of quality.MODELS")
    parser.add_argument("--grid", nargs="+", required=True, help="key=v1,v2,... (run.py overrides)")
    parser.add_argument("--grid-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every job (e.g. the accelerator)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--from-existing", action="store_true", help="reuse runs whose metrics.json exists")
    parser.add_argument("--log-dir", type=Path, default=quality.ROOT / "logs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    names = {row["model"]: row for row in quality.MODELS}
    missing = [m for m in args.models if m not in names]
    if missing:
        raise SystemExit(f"--models {missing}: not rows of benchmarks/quality.py")
    rows = [names[m] for m in args.models]
    records = search(
        rows,
        parse_grid(args.grid),
        args.grid_seeds,
        args.seeds,
        args.extra,
        args.log_dir,
        args.jobs,
        args.from_existing,
    )
    args.out.write_text(json.dumps(records, indent=1) + "\n")
    print(quality.table([r for r in records if r["chosen"] and r["seed"] in args.seeds]))
    return records


if __name__ == "__main__":
    main()
