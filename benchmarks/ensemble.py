"""Two-model CTR ensembles (P2): does an LM carry signal the classic models lack? The same form for every pair.

    python benchmarks/ensemble.py deepfm_idprofile+ctr_lora_late deepfm_idprofile+deepfm deepfm_idprofile+fm \
        deepfm_idprofile+deepfm_idprofile --seeds 0 1 2

Each pair A+B scores a test row by the mean of the two models' logits (equal weights: nothing is tuned, on validation
or test). Seed s of A is paired with seed s of B, except A+A, the seed ensemble, which pairs seed s with the next seed
(s+1, wrapping: each run then sits in two ensembles, so their spread understates the error), or with `--partners`,
the i-th seed with the i-th partner (`--seeds 0 … 9 --partners 10 … 19`: ten ensembles of twenty distinct runs).
Scores come from each `benchmarks/quality.py` run's best checkpoint re-tested with `eval.dump_scores=true`
(benchmarks/by_popularity.py's `dump_run`); the pair's rows must be the same (user, item, label) triples. Prints
AUC / LogLoss per pair (mean ± std over seeds) and the paired difference with A alone, and with `--versus PAIR` each
pair's paired AUC difference with that pair (mean ± std, its standard error, and on how many seeds it is higher);
writes benchmarks/results/ensemble_P2.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from by_popularity import auc, dump_run, sample_std  # noqa: E402
from paired import paired  # noqa: E402
from quality import MODELS  # noqa: E402

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before the logit (a saturated score stays finite)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def logloss(label: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return float(-np.mean(np.where(label > 0.5, np.log(p), np.log1p(-p))))


def ensemble(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows (user_id, item_id, label, score) scored by the mean logit of two dumps of the same test rows."""
    keys = ["user_id", "item_id", "label"]
    same = len(a) == len(b) and all(np.array_equal(a[k].to_numpy(np.float64), b[k].to_numpy(np.float64)) for k in keys)
    if not same:
        raise ValueError("ensemble: the two dumps do not hold the same (user, item, label) rows in the same order")
    score = 1.0 / (1.0 + np.exp(-(logit(a["score"].to_numpy()) + logit(b["score"].to_numpy())) / 2))
    return a[keys].assign(score=score)


def metrics(rows: pd.DataFrame) -> dict[str, float]:
    label, score = rows["label"].to_numpy(), rows["score"].to_numpy()
    return {"AUC": auc(label, score), "LogLoss": logloss(label, score)}


def partner_seeds(seeds: list[int], partners: list[int] | None) -> list[int]:
    """A+A's partner of each seed: `partners` (one per seed, distinct, none of them a seed), else the next seed."""
    if partners is None:
        return [seeds[(i + 1) % len(seeds)] for i in range(len(seeds))]
    if len(partners) != len(seeds) or len(set(partners)) != len(partners) or set(partners) & set(seeds):
        raise SystemExit(f"--partners {partners}: need one per seed ({len(seeds)}), distinct, none of them a seed")
    return partners


def versus(results: list[dict], reference: str) -> None:
    """Add to each pair `AUC − <reference>`: its per-seed AUC minus the reference pair's (by seed index), as
    paired.py gives it (mean, std, standard error, `higher`)."""
    ref = {e["pair"]: e for e in results}[reference]
    for e in results:
        e[f"AUC − {reference}"] = paired(e["AUC"]["values"], ref["AUC"]["values"])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="A+B: quality.py P2 model names (A+A: a seed ensemble)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--partners", nargs="+", type=int, help="A+A: seed i's partner (default: the next seed)")
    parser.add_argument("--versus", help="a pair given above: each pair's paired AUC difference with it")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "logs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ensemble_P2.json")
    args = parser.parse_args(argv)
    rows_by_name = {r["model"]: r for r in MODELS if r["protocol"] == "P2"}
    pairs = [p.split("+") for p in args.pairs]
    bad = [p for p, names in zip(args.pairs, pairs, strict=True) if len(names) != 2 or set(names) - set(rows_by_name)]
    if bad:
        raise SystemExit(f"pairs {bad}: each must be A+B, two P2 model names of benchmarks/quality.py MODELS")
    partners = partner_seeds(args.seeds, args.partners)
    if args.versus and args.versus not in args.pairs:
        raise SystemExit(f"--versus {args.versus}: not one of the pairs given")

    dumps: dict[tuple[str, int], pd.DataFrame] = {}

    def dump(model: str, seed: int) -> pd.DataFrame:
        if (model, seed) not in dumps:
            out = dump_run(rows_by_name[model], seed, args.log_dir)
            dumps[model, seed] = pd.read_parquet(out / "scores_test.parquet")
        return dumps[model, seed]

    results = []
    for (a, b), name in zip(pairs, args.pairs, strict=True):
        runs = []
        for i, seed in enumerate(args.seeds):
            partner = partners[i] if a == b else seed
            alone, joined = metrics(dump(a, seed)), metrics(ensemble(dump(a, seed), dump(b, partner)))
            runs.append({"seeds": [seed, partner], "alone": alone, "ensemble": joined})
            print(f"{name} seeds {seed}+{partner}: AUC {joined['AUC']:.4f} (A alone {alone['AUC']:.4f})", flush=True)
        entry = {"pair": name, "lm_based": any(rows_by_name[m]["lm_based"] for m in (a, b)), "runs": runs}
        for metric in ("AUC", "LogLoss"):
            values = [r["ensemble"][metric] for r in runs]
            diffs = [r["ensemble"][metric] - r["alone"][metric] for r in runs]
            entry[metric] = {"mean": statistics.mean(values), "std": sample_std(values), "values": values}
            entry[f"{metric} − A"] = {"mean": statistics.mean(diffs), "std": sample_std(diffs)}
        results.append(entry)
    if args.versus:
        versus(results, args.versus)

    vs = f" AUC − {args.versus} (SE, higher on) |" if args.versus else ""
    print(f"| pair (equal-weight logit mean) | reads text | AUC | LogLoss | AUC − A alone |{vs}")
    print("|---|---|---:|---:|---:|" + ("---:|" if vs else ""))
    for e in results:
        auc_, ll, d = e["AUC"], e["LogLoss"], e["AUC − A"]
        line = (
            f"| {e['pair']} | {'✓' if e['lm_based'] else ''} | {auc_['mean']:.4f} ± {auc_['std']:.4f} | "
            f"{ll['mean']:.4f} ± {ll['std']:.4f} | {d['mean']:+.4f} ± {d['std']:.4f} |"
        )
        if vs:
            v = e[f"AUC − {args.versus}"]
            line += f" {v['mean']:+.4f} ({v['se']:.4f}, {v['higher']} of {len(args.seeds)}) |"
        print(line)
    command = "python benchmarks/ensemble.py " + " ".join(argv if argv is not None else sys.argv[1:])
    tmp = args.out.with_suffix(".tmp")
    record = {"command": command, "seeds": args.seeds, "partners": partners, "pairs": results}
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
