"""Where does language help? Test metrics per bucket of the target item's training popularity, model against model.

    python benchmarks/by_popularity.py --protocol P1 --models sasrec_cap40 sasrec_hybrid_textdrop_cap40 \
        sasrec_hybrid_smollm2_cap40 --seeds 0 1 2 3 4
    python benchmarks/by_popularity.py --protocol P2 --models deepfm_idprofile deepfm_text_profile --seeds 0 1 2

Each `benchmarks/quality.py` run's best checkpoint is re-tested with `eval.dump_scores=true` (no training; into
logs/by_popularity/), the overall metric recomputed from the dump must equal the run's own (else it stops), test rows
are bucketed by how often their item occurs in the run's TRAIN split, and the script prints, per bucket, NDCG@10 and
HR@10 (P1) or AUC (P2) as mean ± std over seeds plus each model's paired difference with the first model. Writes
benchmarks/results/by_popularity_<protocol>.json and, with matplotlib (the `plot` extra), a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import METRICS, MODELS, resolved_overrides, run_dir  # noqa: E402

from m6rec.metrics.ranking import ranking_values  # noqa: E402
from m6rec.utils.run_record import best_checkpoint  # noqa: E402

EDGES = (0, 20, 50, 100, 200)  # bucket b holds items with EDGES[b] <= training count < EDGES[b + 1]
RUN_METRICS = {
    p: {name: METRICS[name] for name in names} for p, names in {"P1": ("NDCG@10", "HR@10"), "P2": ("AUC",)}.items()
}


def bucket_names(edges: tuple[int, ...] = EDGES) -> list[str]:
    """'0-19', '20-49', …, '200+': the training-count range of each bucket."""
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:], strict=False)] + [f"{edges[-1]}+"]


def bucket_of(counts: np.ndarray, edges: tuple[int, ...] = EDGES) -> np.ndarray:
    """The bucket index of each training count (0 for counts below `edges[1]`)."""
    return np.searchsorted(np.asarray(edges), counts, side="right") - 1


def ranking_metrics(rank: np.ndarray, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k and HR@k of one relevant item per row at 0-based `rank` (the evaluator's `ranking_values`)."""
    values = ranking_values(torch.as_tensor(rank), (k,))
    return {f"NDCG@{k}": float(values[f"ndcg@{k}"]), f"HR@{k}": float(values[f"hr@{k}"])}


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the evaluator computes it (torchmetrics, ties counted one half); NaN when a class is missing."""
    positive = torch.as_tensor(np.asarray(label) > 0.5)
    if positive.all() or not positive.any():
        return float("nan")
    return float(binary_auroc(torch.tensor(np.asarray(score, np.float64)), positive.long()))


def bucket_metrics(protocol: str, dump: pd.DataFrame, counts: np.ndarray) -> list[dict]:
    """One dict per bucket (then one for all rows): n and the protocol's metrics over the dump's rows."""
    buckets = bucket_of(counts)
    out = []
    for b in [*range(len(EDGES)), None]:
        rows = dump if b is None else dump[buckets == b]
        n = len(rows)
        if protocol == "P1":
            values = ranking_metrics(rows["rank"].to_numpy()) if n else {}
        else:
            values = {"AUC": auc(rows["label"].to_numpy(), rows["score"].to_numpy())} if n else {}
        out.append({"bucket": "all" if b is None else bucket_names()[b], "n": n, **values})
    return out


def train_counts(config_file: Path) -> pd.Series:
    """How often each raw item id occurs in the TRAIN split of the run whose resolved config is `config_file`."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from m6rec.data.protocol.splits import TRAIN
    from m6rec.utils.resolvers import register_resolvers

    register_resolvers()
    datamodule = instantiate(OmegaConf.load(config_file).data)
    log = getattr(datamodule, "behaviour", datamodule)  # FeatureDataModule wraps a BehaviourLogDataModule
    inter = log.interactions
    return inter.loc[log.split_codes() == TRAIN, "item_id"].value_counts()


def dump_run(row: dict, seed: int, log_dir: Path) -> Path:
    """Re-test the quality run's best checkpoint with scores dumped; return the new run directory (reused if done)."""
    source = run_dir(log_dir, row, "default", seed)
    metrics = json.loads((source / "metrics.json").read_text())
    ckpt = best_checkpoint(source)
    if ckpt is None:
        raise SystemExit(f"{source}: no best checkpoint (metrics.json best_checkpoint); rerun quality.py first")
    out = log_dir / "by_popularity" / row["protocol"] / row["model"] / f"seed{seed}"
    if not (out / "scores_test.parquet").is_file():
        args = [*resolved_overrides(row, "default", seed, log_dir), f"seed={seed}", "train=false", f"ckpt_path={ckpt}"]
        args += ["eval.dump_scores=true", "logger=csv", f"hydra.run.dir={out}"]
        env = {**os.environ, "WANDB_MODE": "disabled"}
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"re-test of {source} failed:\n{proc.stderr.decode()[-3000:]}")
    tested = json.loads((out / "metrics.json").read_text())
    names = RUN_METRICS[row["protocol"]]
    check_metrics({name: tested[key] for name, key in names.items()}, metrics, row["protocol"], f"{out} (re-test)")
    return out


def check_metrics(values: dict[str, float], logged: dict, protocol: str, where: str) -> None:
    """Stop unless each of the protocol's metrics in `values` (by name) equals the quality run's `logged` one."""
    for name, key in RUN_METRICS[protocol].items():
        if abs(values[name] - logged[key]) > 1e-4:
            raise SystemExit(f"{where}: {name} {values[name]:.4f}, the quality run logged {logged[key]:.4f}")


def summarise(per_run: dict[str, list[list[dict]]], models: list[str]) -> list[dict]:
    """Per model and bucket: mean ± std over seeds of each metric, and the paired difference with models[0]."""
    rows = []
    for model in models:
        runs = per_run[model]
        for b, first in enumerate(runs[0]):
            entry = {"model": model, "bucket": first["bucket"], "n": first["n"]}
            for metric in (k for k in first if k not in ("bucket", "n")):
                values = [run[b][metric] for run in runs]
                base = [run[b][metric] for run in per_run[models[0]]]
                diffs = [v - w for v, w in zip(values, base, strict=True)]
                entry[metric] = {"mean": statistics.mean(values), "std": sample_std(values), "values": values}
                entry[f"{metric} − {models[0]}"] = {"mean": statistics.mean(diffs), "std": sample_std(diffs)}
            rows.append(entry)
    return rows


def sample_std(values: list[float]) -> float:
    """Sample standard deviation over seeds; 0 for one seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict], models: list[str]) -> str:
    metrics = [k for k in rows[0] if k not in ("model", "bucket", "n") and "−" not in k]
    head = ["train count", "rows", *(f"{m} {metric}" for m in models for metric in metrics)]
    head += [f"Δ{metric} {m}" for m in models[1:] for metric in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["model"], r["bucket"]): r for r in rows}
    for bucket in dict.fromkeys(r["bucket"] for r in rows):
        cells = [bucket, str(by[(models[0], bucket)]["n"])]
        cells += [_pm(by[(m, bucket)][metric]) for m in models for metric in metrics]
        diffs = [by[(m, bucket)][f"{metric} − {models[0]}"] for m in models[1:] for metric in metrics]
        cells += [_pm(d, signed=True) for d in diffs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(value: dict, signed: bool = False) -> str:
    return f"{value['mean']:{'+' if signed else ''}.4f} ± {value['std']:.4f}"


def plot(rows: list[dict], models: list[str], metric: str, path: Path) -> None:
    """Bars of each model's paired `metric` difference with models[0] per bucket (std over seeds as error bars), a
    zero line for models[0] itself; skipped without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib missing (pip install -e '.[plot]'): no plot")
        return
    buckets = list(dict.fromkeys(r["bucket"] for r in rows))
    by = {(r["model"], r["bucket"]): r for r in rows}
    others = models[1:] or models
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(others)
    for i, model in enumerate(others):
        x = np.arange(len(buckets)) + (i - (len(others) - 1) / 2) * width
        values = [by[(model, b)][f"{metric} − {models[0]}"] for b in buckets]
        ax.bar(x, [v["mean"] for v in values], width, yerr=[v["std"] for v in values], label=model, capsize=2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    labels = [f"{b}\n({by[(models[0], b)]['n']} rows)\n{by[(models[0], b)][metric]['mean']:.3f}" for b in buckets]
    ax.set_xticks(np.arange(len(buckets)), labels, fontsize=8)
    ax.set_xlabel(f"target item's interactions in the training split (rows; {models[0]}'s {metric})")
    ax.set_ylabel(f"test {metric} − {models[0]}\n(paired by seed: mean ± std)")
    ax.legend(fontsize=8)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(RUN_METRICS), required=True)
    parser.add_argument("--models", nargs="+", required=True, help="quality.py model names; the first is the base")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--log-dir", type=Path, default=ROOT / "logs")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/by_popularity_<P>.json)")
    args = parser.parse_args(argv)
    rows_by_name = {r["model"]: r for r in MODELS if r["protocol"] == args.protocol}
    unknown = [m for m in args.models if m not in rows_by_name]
    if unknown:
        raise SystemExit(f"--models: no {args.protocol} row named {unknown} in benchmarks/quality.py MODELS")

    per_run: dict[str, list[list[dict]]] = {m: [] for m in args.models}
    counts_cache: dict[str, pd.Series] = {}
    for model in args.models:
        for seed in args.seeds:
            out = dump_run(rows_by_name[model], seed, args.log_dir)
            config = out / "config_resolved.yaml"
            dump, tested = pd.read_parquet(out / "scores_test.parquet"), json.loads((out / "metrics.json").read_text())
            key = tested["data"].get("fingerprint", str(config))
            if key not in counts_cache:
                counts_cache[key] = train_counts(config)
            counts = counts_cache[key].reindex(dump["item_id"].to_numpy(), fill_value=0).to_numpy()
            buckets = bucket_metrics(args.protocol, dump, counts)
            check_metrics(buckets[-1], tested, args.protocol, f"{out}/scores_test.parquet")  # dump or buckets wrong
            per_run[model].append(buckets)
            print(f"{model} seed {seed}: " + ", ".join(f"{b['bucket']} {_first(b):.4f}" for b in buckets), flush=True)

    rows = summarise(per_run, args.models)
    print(table(rows, args.models))
    out = args.out or ROOT / "benchmarks" / "results" / f"by_popularity_{args.protocol}.json"
    command = "python benchmarks/by_popularity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"command": command, "edges": list(EDGES), "seeds": args.seeds, "models": args.models, "rows": rows}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    plot(rows, args.models, "NDCG@10" if args.protocol == "P1" else "AUC", out.with_suffix(".png"))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return rows


def _first(bucket: dict) -> float:
    return next((v for k, v in bucket.items() if k not in ("bucket", "n")), float("nan"))


if __name__ == "__main__":
    main()
