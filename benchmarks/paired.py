"""Paired comparison of benchmarks/quality.py rows, seed by seed: does a model beat the reference on the same seeds?

    python benchmarks/paired.py P1 sasrec_hybrid_from_text_cap100_p10_stage1p10 --versus sasrec_cap100_p10
    python benchmarks/paired.py P2 deepfm_text_profile --versus deepfm_idprofile --seeds 10 11 12 13 14 15 16 17 18 19

Reads quality.py's records (`--records`, later files win on the same protocol, model and seed), keeps the seeds every
named row has (or `--seeds`, which each must have), and prints per row the metric's mean ± std and standard error
over those seeds and its paired difference with the reference: mean, std, standard error (std / √seeds) and on how
many seeds it is higher. Runs nothing; `--out` also writes the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import RESULTS  # noqa: E402

DEFAULT_METRIC = {"P1": "NDCG@10", "P2": "AUC", "P3": "NDCG@10"}


def paired(values: list[float], reference: list[float]) -> dict:
    """`values − reference` seed by seed: mean, sample std, standard error (std / √seeds) and `higher` (how many
    seeds it is above the reference)."""
    diffs = [a - b for a, b in zip(values, reference, strict=True)]
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return {
        "mean": statistics.mean(diffs),
        "std": std,
        "se": std / len(diffs) ** 0.5,
        "higher": sum(d > 0 for d in diffs),
    }


def load(paths: list[Path]) -> dict[tuple[str, str, int], dict]:
    """Records of quality.py result files by (protocol, model, seed); a later file's record replaces an earlier one."""
    records: dict[tuple[str, str, int], dict] = {}
    for path in paths:
        try:
            records |= {(r["protocol"], r["model"], r["seed"]): r for r in json.loads(path.read_text())}
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise SystemExit(f"{path}: not a quality.py record file ({error})") from error
    return records


def compare(
    records: dict[tuple[str, str, int], dict],
    protocol: str,
    models: list[str],
    reference: str,
    metric: str,
    seeds: list[int] | None = None,
) -> dict:
    """Each of `models` (and `reference`) over the shared seeds, with its paired difference with `reference`."""
    names = [reference, *[m for m in models if m != reference]]
    have = {m: {s for p, mm, s in records if p == protocol and mm == m} for m in names}
    if seeds is None:
        seeds = sorted(set.intersection(*have.values()))
    missing = {m: sorted(set(seeds) - have[m]) for m in names if set(seeds) - have[m]}
    if missing:
        raise SystemExit(f"{protocol}: no records for " + "; ".join(f"{m} seeds {s}" for m, s in missing.items()))
    if not seeds:
        raise SystemExit(f"{protocol}: no seed has records for all of {', '.join(names)}")

    def values(model: str) -> list[float]:
        out = [records[protocol, model, s]["metrics"].get(metric) for s in seeds]
        if None in out:
            raise SystemExit(f"{protocol} {model}: its records have no {metric}")
        return out

    ref = values(reference)
    rows = []
    for model in names:
        v = values(model)
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        row = {"model": model, "mean": statistics.mean(v), "std": std, "se": std / len(v) ** 0.5, "values": v}
        if model != reference:
            row["versus"] = paired(v, ref)
        rows.append(row)
    return {"protocol": protocol, "metric": metric, "reference": reference, "seeds": seeds, "rows": rows}


def table(result: dict) -> str:
    n = len(result["seeds"])
    lines = [
        f"| {result['protocol']} model ({result['metric']}, seeds {' '.join(map(str, result['seeds']))}) "
        f"| mean ± std (SE) | − {result['reference']} (std, SE, higher on) |",
        "|---|---:|---:|",
    ]
    for row in result["rows"]:
        cell = "—"
        if "versus" in row:
            d = row["versus"]
            cell = f"{d['mean']:+.4f} ({d['std']:.4f}, {d['se']:.4f}, {d['higher']} of {n})"
        lines.append(f"| {row['model']} | {row['mean']:.4f} ± {row['std']:.4f} ({row['se']:.4f}) | {cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=sorted(DEFAULT_METRIC))
    parser.add_argument("models", nargs="+", help="quality.py model names")
    parser.add_argument("--versus", required=True, help="the reference model (a quality.py model name)")
    parser.add_argument("--metric", help="a quality.py METRICS name (default: NDCG@10 for P1 / P3, AUC for P2)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed all rows have")
    parser.add_argument("--records", nargs="+", type=Path, default=[RESULTS])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    metric = args.metric or DEFAULT_METRIC[args.protocol]
    result = compare(load(args.records), args.protocol, args.models, args.versus, metric, args.seeds)
    print(table(result))
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
