"""Paired comparison of benchmarks/quality.py rows, seed by seed: does a model beat the reference on the same seeds?

    python benchmarks/paired.py P1 sasrec_hybrid_from_text_cap100_p10_stage1p10 --versus sasrec_cap100_p10
    python benchmarks/paired.py P2 deepfm_text_profile --versus deepfm_idprofile --seeds 10 11 12 13 14 15 16 17 18 19

Reads quality.py's records (`--records`, later files win on the same protocol, model and seed), keeps the seeds every
named row has (or `--seeds`, which each must have), and prints per row the metric's mean ± std and standard error
over those seeds and its paired difference with the reference: mean, std, standard error (std / √seeds) and on how
many seeds it is higher. Runs nothing; `--out` also writes the table as JSON, `--plot` a PNG: each row's metric by
seed, and each row's paired difference by seed with its mean ± one standard error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import RESULTS, read_records  # noqa: E402

from m6rec.utils.extras import require  # noqa: E402
from m6rec.utils.files import atomic_path, write_text_atomic  # noqa: E402

DEFAULT_METRIC = {"P1": "NDCG@10", "P2": "AUC", "P3": "NDCG@10"}


def summary(values: list[float]) -> dict:
    """Mean, sample std (0 for one value) and standard error (std / √n) of per-seed values."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "se": std / len(values) ** 0.5}


def paired(values: list[float], reference: list[float]) -> dict:
    """`values − reference` seed by seed: its `summary` and `higher` (how many seeds it is above the reference)."""
    diffs = [a - b for a, b in zip(values, reference, strict=True)]
    return {**summary(diffs), "higher": sum(d > 0 for d in diffs)}


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
        row = {"model": model, **summary(v), "values": v}
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


def plot(result: dict, path: Path, held_out_from: int | None = None) -> None:
    """Write to `path` (atomically) the metric of each row by seed (top) and each row's paired difference with the
    reference by seed (bottom: bars, and its mean as a line inside a ± one standard error band); a dotted line marks
    where the seeds from `held_out_from` on begin."""
    require("matplotlib", "plot", "the paired plot")
    from matplotlib.figure import Figure  # no pyplot: Agg, no window

    seeds, metric, x = result["seeds"], result["metric"], range(len(result["seeds"]))
    fig = Figure(figsize=(max(6.0, 0.45 * len(seeds) + 2.0), 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for row in result["rows"]:
        top.plot(x, row["values"], marker="o", label=f"{row['model']} ({row['mean']:.4f})")
    top.set_ylabel(f"test {metric}")
    top.set_title(f"{result['protocol']}: {metric} by seed")
    top.legend(fontsize="small")
    others = [row for row in result["rows"] if "versus" in row]
    width = 0.8 / max(1, len(others))
    for i, row in enumerate(others):
        diffs = [v - r for v, r in zip(row["values"], result["rows"][0]["values"], strict=True)]
        d = row["versus"]
        shift = (i - (len(others) - 1) / 2) * width
        bars = bottom.bar([k + shift for k in x], diffs, width=width, alpha=0.7, label=row["model"])
        colour = bars.patches[0].get_facecolor()
        bottom.axhline(d["mean"], color=colour, label=f"mean {d['mean']:+.4f} ± SE {d['se']:.4f}")
        bottom.axhspan(d["mean"] - d["se"], d["mean"] + d["se"], color=colour, alpha=0.15)
    bottom.axhline(0.0, color="black", linewidth=0.8)
    if held_out_from is not None and held_out_from in seeds:
        for ax in (top, bottom):
            ax.axvline(seeds.index(held_out_from) - 0.5, color="grey", linestyle=":")
        top.annotate(
            " held-out seeds →",
            (seeds.index(held_out_from) - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            va="top",
            color="grey",
            fontsize="small",
        )
    bottom.set_ylabel(f"− {result['reference']}")
    bottom.set_xticks(list(x), [str(s) for s in seeds])
    bottom.set_xlabel("seed")
    bottom.legend(fontsize="small")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=sorted(DEFAULT_METRIC))
    parser.add_argument("models", nargs="+", help="quality.py model names")
    parser.add_argument("--versus", required=True, help="the reference model (a quality.py model name)")
    parser.add_argument("--metric", help="a quality.py METRICS name (default: NDCG@10 for P1 / P3, AUC for P2)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed all rows have")
    parser.add_argument("--records", nargs="+", type=Path, default=[RESULTS])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="write the by-seed plot here (a .png)")
    parser.add_argument("--held-out-from", type=int, default=None, help="--plot: mark the seeds from this one on")
    args = parser.parse_args(argv)
    metric = args.metric or DEFAULT_METRIC[args.protocol]
    records = read_records(args.records, "--records")
    result = compare(records, args.protocol, args.models, args.versus, metric, args.seeds)
    print(table(result))
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.plot:
        plot(result, args.plot, args.held_out_from)
        print(f"wrote {args.plot}")
    return result


if __name__ == "__main__":
    main()
