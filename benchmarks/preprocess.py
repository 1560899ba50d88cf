"""Time BehaviourLogDataModule preparation (load → split → history → render + tokenize → cache), cold and warm.

    python benchmarks/preprocess.py                      # real ML-100K (data/ml-100k) + a generated 1M-rating log
    python benchmarks/preprocess.py --datasets ml-100k   # one of: ml-100k, synthetic-1m

Each dataset runs in fresh subprocesses with empty tokenizer/sample caches: one times the stages one by one, one
times `setup()` end to end (cold), then a new DataModule on the same caches (warm); peak RSS is the cold+warm
process's. The generated log has ML-100K's format with ML-1M's shape (6,040 users × 3,700 items, 1,000,000 ratings).
Wall times on a shared machine vary with load; CPU times (user + system of the process) vary less.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = {"ml-100k": 5.0, "synthetic-1m": 60.0}  # cold setup, seconds
STAGES = ["load", "tokenizer", "split", "history", "render+tokenize", "cache write"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - wall, _cpu() - cpu


# --------------------------------------------------------------------------- the generated 1M log
def write_synthetic(
    root: Path, n_users: int = 6040, n_items: int = 3700, n_ratings: int = 1_000_000, layout: str = "ml-100k"
) -> Path:
    """A seeded log with skewed user activity and item popularity, in ML-100K's layout (u.data, u.item, u.user) or
    ML-20M's (ratings.csv, movies.csv; no user table)."""
    from m6rec.data.sources.movielens import GENRES

    if (root / "u.data").is_file() or (root / "ratings.csv").is_file():
        return root
    rng = np.random.default_rng(0)
    activity = rng.pareto(1.2, n_users) + 1
    popularity = rng.pareto(1.0, n_items) + 1
    pairs = np.zeros(0, np.int64)
    while len(pairs) < n_ratings:  # distinct (user, item) pairs, as in MovieLens
        users = rng.choice(n_users, 2 * n_ratings, p=activity / activity.sum())
        items = rng.choice(n_items, 2 * n_ratings, p=popularity / popularity.sum())
        pairs = np.unique(np.concatenate([pairs, users * n_items + items]))
    pairs = rng.permutation(pairs)[:n_ratings]
    users, items = pairs // n_items, pairs % n_items
    user_taste, item_taste = rng.normal(0, 1, (n_users, 4)), rng.normal(0, 1, (4, n_items))
    taste = np.einsum("jk,kj->j", user_taste[users], item_taste[:, items]) / 2  # not the (users × items) matrix
    ratings = np.clip(np.rint(3.5 + taste + rng.normal(0, 0.8, n_ratings)), 1, 5).astype(int)
    times = 874_724_710 + rng.integers(0, 3 * 365 * 86_400, n_ratings)
    root.mkdir(parents=True, exist_ok=True)
    flags = (rng.random((n_items, len(GENRES))) < 0.12).astype(int)
    years = rng.integers(1930, 1999, n_items)
    if layout == "ml-20m":
        pd.DataFrame(
            {"userId": users + 1, "movieId": items + 1, "rating": ratings.astype(float), "timestamp": times}
        ).to_csv(root / "ratings.csv", index=False)
        genres = ["|".join(g for g, on in zip(GENRES, f, strict=True) if on) or "(no genres listed)" for f in flags]
        pd.DataFrame(
            {
                "movieId": np.arange(1, n_items + 1),
                "title": [f"Synthetic Movie {i + 1} ({y})" for i, y in enumerate(years)],
                "genres": genres,
            }
        ).to_csv(root / "movies.csv", index=False)
        return root
    pd.DataFrame({"u": users + 1, "i": items + 1, "r": ratings, "t": times}).to_csv(
        root / "u.data", sep="\t", header=False, index=False
    )
    lines = [
        f"{i + 1}|Synthetic Movie {i + 1} ({y})|01-Jan-{y}||http://example.org/{i + 1}|" + "|".join(map(str, f))
        for i, (y, f) in enumerate(zip(years, flags, strict=True))
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    jobs = ["technician", "writer", "student", "artist", "engineer", "educator", "programmer", "librarian"]
    (root / "u.user").write_text(
        "".join(
            f"{u + 1}|{rng.integers(15, 70)}|{'MF'[u % 2]}|{jobs[u % len(jobs)]}|{10000 + u:05d}\n"
            for u in range(n_users)
        )
    )
    return root


# --------------------------------------------------------------------------- one measurement (in a subprocess)
def _module(root: Path, data_dir: Path):
    from m6rec.data import BehaviourLogDataModule

    dataset = "ml-20m" if (root / "ratings.csv").is_file() else "ml-100k"
    return BehaviourLogDataModule(data_dir=str(data_dir), dataset=dataset, root=str(root))


def run_stages(root: Path, data_dir: Path) -> dict[str, Any]:
    """Each stage of a cold `setup()` on its own (same calls, same order)."""
    from m6rec.data.datamodules.sample_cache import cache_dir, write_samples
    from m6rec.data.protocol.history import recent_training_rows
    from m6rec.data.protocol.splits import TRAIN

    dm, out = _module(root, data_dir), {}
    _, *out["load"] = _timed(lambda: (dm.tables, dm.interactions, dm.fingerprint))
    tokenizer, *out["tokenizer"] = _timed(lambda: dm.tokenizer)
    samples, *out["split"] = _timed(dm.samples)
    is_history = (samples["split"] == TRAIN).to_numpy() & samples["observed"].to_numpy()
    history, *out["history"] = _timed(lambda: recent_training_rows(samples, is_history, dm.hparams.history_len))
    ids, *out["render+tokenize"] = _timed(lambda: dm.encode_columns(samples, history)["input_ids"])
    columns = {"input_ids": ids, "label": samples["label"].to_numpy(np.float32)}
    path = cache_dir(data_dir, dm.fingerprint, tokenizer)
    _, *out["cache write"] = _timed(lambda: write_samples(path, columns, {}))
    return {"stages": out, "interactions": len(dm.interactions), "tokens": int(ids.lengths.sum())}


def run_setup(root: Path, data_dir: Path) -> dict[str, Any]:
    """`setup()` with the sample cache in `data_dir` (cold when it is empty, else warm): wall and CPU s, this process's
    peak RSS, and a digest of every split's tokens and labels."""
    dm = _module(root, data_dir)
    _, *seconds = _timed(dm.setup)
    peak = peak_rss_mib()  # before the digest below reads every token
    h = hashlib.sha256()
    for name, dataset in sorted(dm.datasets.items()):
        ids, step = dataset.input_ids, 2**20  # a million rows at a time: the digest must not hold a copy of them all
        h.update(name.encode() + dataset.labels.tobytes())
        for lo in range(0, len(ids), step):
            if hasattr(ids, "take"):
                flat, offsets = ids.take(np.arange(lo, min(lo + step, len(ids)))).compact()
            else:  # a list of arrays (earlier versions)
                rows = ids[lo : lo + step]
                flat, offsets = np.concatenate(rows), np.concatenate([[0], np.cumsum(list(map(len, rows)))])
            h.update(flat.astype(np.int32).tobytes() + offsets.astype(np.int64).tobytes())
    return {"seconds": seconds, "peak_rss_mib": peak, "digest": h.hexdigest()}


def measure_setup(root: Path, data_dir: Path) -> dict[str, Any]:
    """Cold `setup()` (empty caches), then warm (a new process reading the caches), each in a fresh process."""
    cold, warm = _subprocess("setup", root, data_dir), _subprocess("setup", root, data_dir)
    return {
        "cold": cold["seconds"],
        "warm": warm["seconds"],
        "warm_equals_cold": cold["digest"] == warm["digest"],
        "peak_rss_mib": cold["peak_rss_mib"],
        "warm_peak_rss_mib": warm["peak_rss_mib"],
    }


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would also count the parent's RSS at fork, kept across exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- driver
def _subprocess(mode: str, root: Path, data_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", mode, "--root", str(root), "--cache", str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} on {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, stages: dict, setup: dict) -> list[str]:
    cells = [name, f"{stages['interactions']:,}"]
    cells += [f"{stages['stages'][s][0]:.2f}" for s in STAGES]
    cells += [f"{setup['cold'][0]:.2f} ({setup['cold'][1]:.2f})", f"{setup['warm'][0]:.2f} ({setup['warm'][1]:.2f})"]
    target = TARGETS.get(name)
    cells += [f"{setup['peak_rss_mib']:,.0f}", f"< {target:.0f} s: {'met' if setup['cold'][0] < target else 'MISSED'}"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="holds ml-100k/ (fetched if absent)")
    parser.add_argument("--datasets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--one", choices=["stages", "setup"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a measurement inside a fresh process
        result = (run_stages if args.one == "stages" else run_setup)(args.root, args.cache)
        print(json.dumps(result))
        return

    from m6rec.data.sources.movielens import fetch_ml100k

    roots = {
        "ml-100k": lambda: fetch_ml100k(args.data_dir),
        "synthetic-1m": lambda: write_synthetic(args.data_dir / "benchmarks" / "synthetic-1m"),
    }
    header = [
        "dataset",
        "interactions",
        *STAGES,
        "cold setup s (cpu)",
        "warm setup s (cpu)",
        "peak RSS MiB",
        "target (cold)",
    ]
    rows = []
    for name in args.datasets:
        root = roots[name]()
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            stages, setup = _subprocess("stages", root, Path(a)), measure_setup(root, Path(b))
        assert setup["warm_equals_cold"], "the cached samples differ from the built ones"
        rows.append(_row(name, stages, setup))
        print(f"{name}: {stages['tokens']:,} tokens", file=sys.stderr)
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nStage columns: wall seconds of each cold stage run alone; load includes hashing the raw files.")


if __name__ == "__main__":
    main()
