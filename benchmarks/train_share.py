"""P2 test AUC by the share of rows trained on: quality.py's `<row>_train10 / 20 / 40` rows beside the rows themselves
(P2's 80 %), mean ± std over the seeds each has; a table, JSON and a plot of the metric and of each row's gap to
`--versus`.

    python benchmarks/train_share.py --records benchmarks/results/quality_ml100k_train_share.json \\
        --models lr deepfm lr_mpnet_bothknn … --versus deepfm_idprofile_iddrop0.5_below50_bothknn_lfpad \\
        --out benchmarks/results/p2_train_share.json

Runs nothing. A row at share s is the quality.py row `<base>_train<s>` (`data.behaviour.split_ratios=[s, 0.1,
0.9 - s]`: validation stays 10 %, the test set is every other row); `<base>` itself is P2 (80 / 10 / 10). With
`--fixed`, it is `<base>_train<s>fixed` instead (`data.behaviour.train_fraction=s / 80`: P2's split with only that
share of its TRAIN rows, so every share has P2's validation and test rows). The gap is paired: per seed, the row
minus `--versus` at the same share, then mean ± its standard error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired import paired, summary  # noqa: E402
from quality import read_records  # noqa: E402

from m6rec.utils.extras import require  # noqa: E402
from m6rec.utils.files import atomic_path, write_text_atomic  # noqa: E402

SHARE = re.compile(r"^(?P<base>.+)_train(?P<share>\d+)(?P<fixed>(fixed)?)$")
FULL_SHARE = 80  # P2's TRAIN share (80 / 10 / 10)


def by_share(records: dict, metric: str, fixed: bool = False) -> dict[str, dict[int, dict[int, float]]]:
    """{base row: {train share %: {seed: metric}}} of the P2 records: the `_trainNN` rows (`_trainNNfixed` with
    `fixed`; the other family is left out); a row without either suffix is share 80."""
    table: dict[str, dict[int, dict[int, float]]] = {}
    for (protocol, model, seed), record in records.items():
        if protocol != "P2" or metric not in record["metrics"]:
            continue
        match = SHARE.match(model)
        if match and bool(match["fixed"]) != fixed:
            continue
        base, share = (match["base"], int(match["share"])) if match else (model, FULL_SHARE)
        table.setdefault(base, {}).setdefault(share, {})[seed] = record["metrics"][metric]
    return table


def lm_based_rows(records: dict) -> set[str]:
    """The base rows (share suffix dropped) with a record marked `lm_based`."""
    models = {model for (_, model, _), record in records.items() if record.get("lm_based")}
    return {match["base"] if (match := SHARE.match(model)) else model for model in models}


def summarise(table: dict, versus: str | None, lm_rows: set[str] = frozenset()) -> list[dict]:
    """One entry per (row, share): whether it is in `lm_rows`, the metric's `summary` over its seeds, and with `versus`,
    the paired gap to that row at the same share over the seeds both have (None where they share none)."""
    out = []
    for base, shares in sorted(table.items()):
        for share, seeds in sorted(shares.items()):
            entry = {"model": base, "lm_based": base in lm_rows, "share": share, "seeds": sorted(seeds)}
            entry |= summary(list(seeds.values()))
            reference = table.get(versus, {}).get(share, {}) if versus else {}
            common = sorted(set(seeds) & set(reference))
            if versus and base != versus:
                gap = paired([seeds[s] for s in common], [reference[s] for s in common]) if len(common) > 1 else None
                entry["versus"] = {"model": versus, "seeds": common, **(gap or {})}
            out.append(entry)
    return out


def format_table(entries: list[dict], metric: str) -> str:
    """Rows by share: mean ± std (n) and the paired gap ± SE where there is one."""
    lines = [f"{'model':<66} {'share':>5}  {metric} mean ± std (n)   − versus (SE, higher on)"]
    for e in sorted(entries, key=lambda e: (e["share"], e["model"])):
        gap = e.get("versus", {})
        shown = f"{gap['mean']:+.4f} ({gap['se']:.4f}, {gap['higher']}/{len(gap['seeds'])})" if "mean" in gap else ""
        lines.append(
            f"{e['model']:<66} {e['share']:>4}%  {e['mean']:.4f} ± {e['std']:.4f} ({len(e['seeds'])})  {shown}"
        )
    return "\n".join(lines)


def plot(entries: list[dict], metric: str, versus: str | None, path: Path) -> None:
    """Left: the metric by train share per row (mean ± std); right: each row's paired gap to `versus` (mean ± SE).
    LM-based rows are solid lines marked "(LM)", the classics dashed."""
    require("matplotlib", "plot", "the train-share plot")
    from matplotlib.figure import Figure  # no pyplot: Agg, no window

    fig = Figure(figsize=(13.0 if versus else 6.5, 5.0), layout="constrained")
    left, right = fig.subplots(1, 2) if versus else (fig.subplots(1, 1), None)
    for i, base in enumerate(sorted({e["model"] for e in entries})):
        mine = sorted((e for e in entries if e["model"] == base), key=lambda e: e["share"])
        lm = mine[0]["lm_based"]  # summarise sets it on every entry
        style = {"marker": "o", "capsize": 3, "color": f"C{i % 10}", "ls": "-" if lm else "--"}  # one colour per row
        style["label"] = f"{base} (LM)" if lm else base
        shares = [e["share"] for e in mine]
        left.errorbar(shares, [e["mean"] for e in mine], [e["std"] for e in mine], **style)
        gaps = [e for e in mine if "mean" in e.get("versus", {})]
        if right is not None and gaps:
            means, errors = [e["versus"]["mean"] for e in gaps], [e["versus"]["se"] for e in gaps]
            right.errorbar([e["share"] for e in gaps], means, errors, **style)
    left.set(xlabel="TRAIN share of the rows (%)", ylabel=f"test {metric}", title=f"test {metric} (mean ± std)")
    left.legend(fontsize=6)
    shares = sorted({e["share"] for e in entries})
    for axis in (left, right) if right is not None else (left,):
        axis.set_xscale("log")  # the shares double
        axis.set_xticks(shares, [str(share) for share in shares])
        axis.minorticks_off()
    if right is not None:
        right.axhline(0.0, color="grey", lw=0.8)
        right.set(xlabel="TRAIN share of the rows (%)", ylabel=f"{metric} − the reference", title=f"− {versus}")
        right.legend(fontsize=6)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", nargs="+", type=Path, required=True, help="quality.py record files")
    parser.add_argument("--models", nargs="+", default=None, help="base rows to show (default: every P2 row)")
    parser.add_argument("--versus", default=None, help="base row the others are compared with, seed by seed")
    parser.add_argument("--metric", default="AUC")
    parser.add_argument("--fixed", action="store_true", help="the `_trainNNfixed` rows (P2's test set at every share)")
    parser.add_argument("--out", type=Path, default=None, help="JSON summary; the plot goes beside it as .png")
    args = parser.parse_args(argv)
    records = read_records(args.records, "--records")
    table = by_share(records, args.metric, args.fixed)
    table = {base: shares for base, shares in table.items() if not args.models or base in args.models}
    if not table:
        raise SystemExit(f"--records: no P2 record with metric {args.metric!r}")
    if args.versus and args.versus not in table:
        raise SystemExit(f"--versus {args.versus}: no such row in --records (rows: {', '.join(sorted(table))})")
    entries = summarise(table, args.versus, lm_based_rows(records))
    print(format_table(entries, args.metric))
    if args.out:
        write_text_atomic(args.out, json.dumps(entries, indent=2) + "\n")
        plot(entries, args.metric, args.versus, args.out.with_suffix(".png"))
    return entries


if __name__ == "__main__":
    main()
