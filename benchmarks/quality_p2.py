"""Protocol P2 (ML-100K CTR: label rating ≥ 4, random 80/10/10; rating models on the same rows): every model × seed
through the normal `run.py` path, one record per run, mean ± std per model.

    python benchmarks/quality_p2.py                           # the classic baselines, seeds 0 1 2
    python benchmarks/quality_p2.py --models ctr_lora rating_lora --seeds 0   # today's LM configs as well

Records (benchmarks/results/quality_p2_ml100k.json): {"protocol": "P2", "model", "lm_based", "id_tokens", "seed",
"metrics": {"AUC", "LogLoss"} or {"RMSE", "MAE"}, "wall_s", "command"}, the format of benchmarks/quality.py.
Baseline overrides are the tuned ones (docs/baselines_ctr.md: 6 trials per model, chosen on validation, seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.utils.files import write_text_atomic  # noqa: E402

# (protocol, model, lm_based, id_tokens, overrides): id_tokens = the model learns a vector per user / item id
ROWS = [
    ("P2", "LR", False, True, ["experiment=p2_lr", "task.optimizer.lr=1e-2", "task.optimizer.weight_decay=0"]),
    ("P2", "FM", False, True, ["experiment=p2_fm", "task.optimizer.lr=3e-3", "task.optimizer.weight_decay=0"]),
    ("P2", "DeepFM", False, True, ["experiment=p2_deepfm", "task.optimizer.lr=3e-3",
                                   "task.optimizer.weight_decay=0"]),  # fmt: skip
    ("P2", "BiasedMF", False, True, ["experiment=p2_mf", "task.optimizer.lr=3e-3", "task.optimizer.weight_decay=0"]),
    ("P2", "ctr_lora", True, False, ["experiment=ctr_lora"]),
    ("P2", "rating_lora", True, False, ["experiment=rating_lora"]),
]
BASELINES = ["LR", "FM", "DeepFM", "BiasedMF"]
METRICS = {"test/auc": "AUC", "test/logloss": "LogLoss", "test/rmse": "RMSE", "test/mae": "MAE"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=BASELINES, choices=[row[1] for row in ROWS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each on one torch thread)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality_p2_ml100k.json"))
    p.add_argument("--log-dir", default=str(ROOT / "logs" / "quality_p2"), help="runs go in <log-dir>/<time>/")
    return p.parse_args(argv)


def run_one(row: tuple, seed: int, log_dir: Path) -> dict:
    """Train and test one (model, seed) with run.py; its record, test metrics from the run's metrics.json."""
    protocol, model, lm_based, id_tokens, overrides = row
    run_dir = log_dir / f"{model}_seed{seed}"
    args = [*overrides, f"seed={seed}", "logger=csv"]
    command = "python run.py " + " ".join(shlex.quote(a) for a in args)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    start = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={run_dir}",
                           "~callbacks.rich_progress_bar", "++trainer.enable_progress_bar=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{proc.stderr[-3000:]}")
    logged = json.loads((run_dir / "metrics.json").read_text())
    metrics = {name: float(logged[key]) for key, name in METRICS.items() if key in logged}
    return {"protocol": protocol, "model": model, "lm_based": lm_based, "id_tokens": id_tokens, "seed": seed,
            "metrics": metrics, "wall_s": round(wall, 1), "command": command}  # fmt: skip


def summary(records: list[dict]) -> list[str]:
    """One line per model: mean ± std (over seeds) of each metric, and the mean wall time."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in records):
        own = [r for r in records if r["model"] == model]
        cells = []
        for name in METRICS.values():
            values = [r["metrics"][name] for r in own if name in r["metrics"]]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{name} {statistics.mean(values):.4f} ± {std:.4f}")
        wall = statistics.mean(r["wall_s"] for r in own)
        lines.append(f"{model:12s} n={len(own)}  " + "  ".join(cells) + f"  wall {wall:.0f} s")
    return lines


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = [row for row in ROWS if row[1] in args.models]
    log_dir = Path(args.log_dir) / time.strftime("%Y-%m-%d_%H-%M-%S")
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_one, row, seed, log_dir) for row in rows for seed in args.seeds]
        records = [job.result() for job in jobs]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(records, indent=1) + "\n")
    print("\n".join(summary(records)))
    print(f"records: {out}")
    return records


if __name__ == "__main__":
    main()
