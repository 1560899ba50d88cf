"""Compare finished Hydra jobs offline (no W&B server): group them, aggregate one metric, write a table and a chart.

Usage: python -m m6rec.compare <dir> [<dir> ...] [--metric test/auc] [--by KEY ...] [--lower-is-better] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from m6rec.utils.extras import MissingExtra, require
from m6rec.utils.files import atomic_path, write_text_atomic

MISSING = "—"
META_COLUMNS = ("path", "seed", "overrides", "choices", "config")
# output column -> (metric it averages, table header, cell format)
EXTRAS = {
    "params_trainable": ("params.trainable", "trainable params", "{:,.0f}"),
    "checkpoint_mb": ("checkpoint_mb", "checkpoint (MB)", "{:.3f}"),
    "wall_time_s": ("wall_time_s", "wall time (s)", "{:.1f}"),
}
_NOTHING = object()


class CompareError(ValueError):
    """A problem the user must fix: a missing directory, no finished job, an unknown metric or grouping key."""


class _JobFailed(Exception):
    """A job directory that has no usable result; the message is the reason."""


def find_jobs(dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Job dirs (holding `.hydra/overrides.yaml` or `metrics.json`) at any depth under `dirs`, naturally sorted."""
    jobs: dict[Path, Path] = {}
    for d in map(Path, [dirs] if isinstance(dirs, (str, os.PathLike)) else dirs):
        if not d.is_dir():
            raise CompareError(f"no such directory: {d}")
        for root, subdirs, files in os.walk(d):
            here = Path(root)
            if "metrics.json" in files or (here / ".hydra" / "overrides.yaml").is_file():
                jobs.setdefault(here.resolve(), here)
                subdirs[:] = []  # a job's checkpoints/wandb folders hold no further jobs
            else:
                subdirs[:] = [s for s in subdirs if not s.startswith(".")]
    return sorted(jobs.values(), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))])


def _flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict, keyed by dotted path (booleans and strings are dropped)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def _get(tree: Any, dotted: str) -> Any:
    """`tree[a][b][c]` for "a.b.c", or `_NOTHING` when a part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _NOTHING
        tree = tree[part]
    return tree


def _label(value: Any) -> str:
    """A config value as a group label; numbers are normalised so that `1e-3` and `0.001` agree."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return _label(cast(value))
            except ValueError:
                pass
        return value
    return repr(value) if isinstance(value, float) else str(value)


def _load_yaml(path: Path) -> Any:
    """Parsed YAML file, or None when it does not exist."""
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_job(job: Path) -> dict[str, Any]:
    """The record of one finished job; raises `_JobFailed(reason)` for a crashed or unreadable one."""
    if not (job / "metrics.json").is_file():
        raise _JobFailed("no metrics.json (crashed or still running)")
    try:
        metrics = json.loads((job / "metrics.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _JobFailed(f"invalid JSON ({e})") from e
    if not isinstance(metrics, dict):
        raise _JobFailed("invalid JSON (metrics.json is not an object)")
    try:
        overrides = _load_yaml(job / ".hydra" / "overrides.yaml") or []
        choices = _get(_load_yaml(job / ".hydra" / "hydra.yaml"), "hydra.runtime.choices")
        config = _load_yaml(job / "config_resolved.yaml") or {}
    except yaml.YAMLError as e:
        raise _JobFailed(f"invalid YAML ({' '.join(str(e).split())})") from e
    config = config if isinstance(config, dict) else {}
    pairs = [str(o).partition("=") for o in (overrides if isinstance(overrides, list) else [])]
    return {
        "path": job,
        "seed": config.get("seed"),
        "overrides": {key.lstrip("+~"): value for key, _, value in pairs},
        "choices": choices if isinstance(choices, dict) else {},
        "config": config,
        **_flatten(metrics),
    }


def _collect(dirs: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, dict[Path, str]]:
    """Finished jobs as a DataFrame, and {failed job dir: reason}."""
    records, failed = [], {}
    for job in find_jobs(dirs):
        try:
            records.append(_read_job(job))
        except _JobFailed as e:
            failed[job] = str(e)
    return pd.DataFrame.from_records(records, columns=None if records else list(META_COLUMNS)), failed


def collect_runs(dirs: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, list[Path]]:
    """One row per finished job (path, seed, overrides, choices, config dicts, then one column per numeric metric,
    nested names joined with "."), and the failed job dirs (no metrics.json, or invalid JSON)."""
    runs, failed = _collect(dirs)
    return runs, list(failed)


def detect_keys(runs: pd.DataFrame) -> list[str]:
    """Override keys whose value differs across jobs (absent counts as a value), except `seed` and `hydra.*`."""
    keys = dict.fromkeys(k for o in runs["overrides"] for k in o)
    return [
        k for k in keys if k != "seed" and not k.startswith("hydra.") and len({o.get(k) for o in runs["overrides"]}) > 1
    ]


def lookup(run: pd.Series | dict, key: str) -> str:
    """A job's value for `key`: its Hydra group choice, else its override, else its resolved config at a dotted path."""
    if key in run["choices"]:
        return _label(run["choices"][key])
    if key in run["overrides"]:
        return _label(run["overrides"][key])
    value = _get(run["config"], key)
    return MISSING if value is _NOTHING else _label(value)


def compare(
    dirs: Iterable[str | os.PathLike],
    metric: str = "test/auc",
    by: list[str] | None = None,
    lower_is_better: bool = False,
) -> pd.DataFrame:
    """One row per group, best mean first: the by-keys, n, mean, std (ddof=1, NaN when n=1), best, and the means of
    params_trainable / checkpoint_mb / wall_time_s when present. `by=None` detects the keys; `attrs` holds metric,
    by and failures."""
    dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    runs, failed = _collect(dirs)
    if runs.empty:
        raise CompareError(f"no finished jobs under {', '.join(map(str, dirs))} ({len(failed)} failed)")
    if metric in META_COLUMNS or metric not in runs.columns or runs[metric].isna().all():
        available = ", ".join(c for c in runs.columns if c not in META_COLUMNS)
        raise CompareError(f"no job has metric {metric!r} (available: {available})")
    keys = detect_keys(runs) if by is None else list(by)
    table = pd.DataFrame({k: [lookup(r, k) for _, r in runs.iterrows()] for k in keys}, index=runs.index)
    for key in keys:
        if (table[key] == MISSING).all():
            raise CompareError(f"key {key!r} is in no job's group choices, overrides or config")
    if not keys:
        table["group"] = "all"
    table["_metric"] = runs[metric]
    extras = [name for name, (col, *_) in EXTRAS.items() if col in runs.columns]
    for name in extras:
        table[name] = runs[EXTRAS[name][0]]
    groups = table.dropna(subset=["_metric"]).groupby(keys or ["group"], sort=True)
    out = groups["_metric"].agg(n="count", mean="mean", std="std")
    out["best"] = groups["_metric"].min() if lower_is_better else groups["_metric"].max()
    for name in extras:
        out[name] = groups[name].mean()
    out = out.reset_index().sort_values("mean", ascending=lower_is_better, kind="stable", ignore_index=True)
    out.attrs.update(metric=metric, by=keys, lower_is_better=lower_is_better, finished=len(runs), failed=failed)
    return out


def _cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows shared by the terminal and Markdown tables."""
    labels = list(df.columns[: df.columns.get_loc("n")])
    extras = [c for c in EXTRAS if c in df.columns]
    headers = [*labels, "n", "mean ± std", "best", *(EXTRAS[c][1] for c in extras)]
    rows = []
    for _, r in df.iterrows():
        std = MISSING if pd.isna(r["std"]) else f"{r['std']:.4f}"
        row = [str(r[c]) for c in labels] + [str(r["n"]), f"{r['mean']:.4f} ± {std}", f"{r['best']:.4f}"]
        rows.append(row + [MISSING if pd.isna(r[c]) else EXTRAS[c][2].format(r[c]) for c in extras])
    return headers, rows


def to_markdown(df: pd.DataFrame, command: str) -> str:
    """GitHub-Markdown report: a line naming the metric and `command`, the table, then the failed jobs."""
    headers, rows = _cells(df)
    better = "lower" if df.attrs.get("lower_is_better") else "higher"
    lines = [f"Metric: `{df.attrs['metric']}` ({better} is better). Produced by: `{command}`", ""]
    lines.append("| " + " | ".join(headers) + " |")
    n_labels = df.columns.get_loc("n")
    lines.append("|" + "|".join(["---"] * n_labels + ["---:"] * (len(headers) - n_labels)) + "|")
    lines += ["| " + " | ".join(c.replace("|", r"\|") for c in row) + " |" for row in rows]
    failed = df.attrs.get("failed") or {}
    if failed:
        lines += ["", f"{len(failed)} failed job(s), not included:", *(f"- `{p}`: {why}" for p, why in failed.items())]
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, path: Path) -> None:
    """Write a bar chart of the mean metric per group (std error bars, n on each bar) to `path`, atomically; raise
    MissingExtra without matplotlib (the `plot` extra)."""
    require("matplotlib", "plot", "comparison.png")
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, never opens a window or changes a backend

    labels = list(df.columns[: df.columns.get_loc("n")])
    names = [", ".join(str(v) for v in row) for row in df[labels].itertuples(index=False)]
    fig = Figure(figsize=(max(4.0, 1.0 + 1.2 * len(df)), 4.0), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(df)), df["mean"], yerr=df["std"].fillna(0.0), capsize=4, color="tab:blue")
    ax.bar_label(bars, labels=[f"n={n}" for n in df["n"]], label_type="center", color="white")
    ax.set_xticks(range(len(df)), names, rotation=30 if len(df) > 4 else 0, ha="right" if len(df) > 4 else "center")
    ax.set_ylabel(df.attrs["metric"])
    ax.set_title(", ".join(df.attrs.get("by") or []) or "all runs")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the table, write comparison.md/.png; a user error exits with code 2 and one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m m6rec.compare", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories searched (any depth) for Hydra job dirs")
    parser.add_argument("--metric", default="test/auc", help="metric from metrics.json, nested names joined by '.'")
    parser.add_argument("--by", action="append", help="grouping key, repeatable (default: override keys that differ)")
    parser.add_argument("--lower-is-better", action="store_true", help="sort ascending and take the minimum as best")
    parser.add_argument("--out", type=Path, help="where comparison.md/.png go (default: the first directory)")
    args = parser.parse_args(argv)
    try:
        df = compare(args.dirs, args.metric, args.by, args.lower_is_better)
    except CompareError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")

    headers, rows = _cells(df)
    table = Table(title=f"{args.metric} by {', '.join(df.attrs['by']) or 'all runs'}")
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i >= df.columns.get_loc("n") else "left")
    for row in rows:
        table.add_row(*map(escape, row))
    console = Console()
    console.print(table)
    failed = df.attrs["failed"]
    console.print(f"{df.attrs['finished']} finished job(s), {len(failed)} failed", highlight=False)
    for path, why in failed.items():
        print(f"{path}: {why}", file=sys.stderr)

    out = args.out or args.dirs[0]
    write_text_atomic(out / "comparison.md", to_markdown(df, shlex.join(["python", "-m", "m6rec.compare", *argv])))
    written = [out / "comparison.md"]
    try:
        plot(df, out / "comparison.png")
        written.append(out / "comparison.png")
    except MissingExtra as e:  # the table and comparison.md are written; only the chart needs the extra
        print(f"{parser.prog}: {e}", file=sys.stderr)
    console.print(escape("wrote " + " and ".join(map(str, written))), highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
