"""Scale and speed in one table: framework overhead, loader vs model, startup, FLOPs utilisation, data preparation,
full ranking, 2-process CPU DDP, and (only on a GPU) the GPU numbers.  Writes benchmarks/results/perf.json.

    python benchmarks/perf.py                        # ML-100K CTR (experiment=ctr_lora), prep at 100K and 1M
    python benchmarks/perf.py --prep-sizes 100k 1m 5m 20m   # the larger generated logs (for the pipeline rebuild)
    python benchmarks/perf.py --skip prep ddp        # leave parts out (their entries are null)

Training measurements use one intra-op thread (OMP_NUM_THREADS=1; full ranking also runs on all cores) and the same
batches: `--steps` training batches of ML-100K CTR with the default model
(2-block 64-d GPT-2 + LoRA). Wall times on a shared machine vary with load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "perf.json"
GPU_RESULTS = ROOT / "benchmarks" / "results" / "gpu_h100.json"  # benchmarks/gpu.py on the lent H100
# (users, items, interactions, layout) of the generated logs (benchmarks/preprocess.write_synthetic): ML-100K / ML-1M
# shaped in ML-100K's files, then ML-20M-shaped (27K items) in ML-20M's files (ratings.csv, movies.csv)
PREP_SHAPES = {
    "100k": (943, 1682, 100_000, "ml-100k"),
    "1m": (6040, 3700, 1_000_000, "ml-100k"),
    "1m-ml20m": (13_800, 27_278, 1_000_000, "ml-20m"),
    "5m": (69_000, 27_278, 5_000_000, "ml-20m"),
    "20m": (138_493, 27_278, 20_000_000, "ml-20m"),
}
PARTS = ("overhead", "startup", "prep", "full_rank", "ddp")


def _setup(steps: int, data_dir: Path) -> tuple[Any, Any, list[dict]]:
    """ML-100K CTR datamodule and system (experiment=ctr_lora) and the first `steps` training batches."""
    from m6rec.build import build_datamodule_and_system
    from tests.helpers import compose_config

    cfg = compose_config(["experiment=ctr_lora", f"paths.data_dir={data_dir}", "~logger"], Path(tempfile.mkdtemp()))
    datamodule, system = build_datamodule_and_system(cfg)
    datamodule.setup()
    batches = [b for _, b in zip(range(steps), datamodule.train_dataloader(), strict=False)]
    return datamodule, system, batches


def _bare_loop(system, batches: list[dict]) -> float:
    """Seconds for a plain PyTorch loop over `batches`: loss, backward, clip, AdamW step (what Lightning does)."""
    params = [p for p in system.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    system.train()
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        system.loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return time.perf_counter() - start


def _lightning_loop(system, batches: list[dict]) -> float:
    """Seconds for Lightning's fit over the same batches (the Trainer run.py builds, without logging/validation)."""
    import lightning as L

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        gradient_clip_val=1.0,
        logger=False,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    system.configure_optimizers = lambda: torch.optim.AdamW([p for p in system.parameters() if p.requires_grad], 1e-3)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    start = time.perf_counter()
    trainer.fit(system, train_dataloaders=loader)
    return time.perf_counter() - start


def _peak_matmul_flops(n: int = 1024, repeats: int = 10) -> float:
    """This CPU's fp32 matmul FLOP/s on one thread (the peak the model's utilisation is measured against)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def overhead(steps: int, data_dir: Path) -> dict[str, float]:
    """framework_overhead_ratio, loader_to_model_ratio and flops_utilisation on the same `steps` batches."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    datamodule, system, batches = _setup(steps, data_dir)
    state = {k: v.clone() for k, v in system.state_dict().items()}
    _bare_loop(system, batches[:3])  # warm-up
    bare = _bare_loop(system, batches)
    system.load_state_dict(state)
    lightning = _lightning_loop(system, batches)
    start = time.perf_counter()
    n_loaded = sum(1 for _ in zip(range(steps), datamodule.train_dataloader(), strict=False))
    loader = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:
        system.loss(batches[0]).backward()
    step_flops = counter.get_total_flops()  # one batch's forward + backward
    return {
        "framework_overhead_ratio": lightning / bare,
        "loader_to_model_ratio": (bare / steps) / (loader / n_loaded),
        "flops_utilisation": step_flops / (bare / steps) / _peak_matmul_flops(),
        "bare_step_ms": 1000 * bare / steps,
        "lightning_step_ms": 1000 * lightning / steps,
    }


def prep(sizes: list[str], data_dir: Path) -> dict[str, dict[str, float]]:
    """Cold / warm BehaviourLogDataModule.setup() seconds and peak RSS MB per generated log size (preprocess.py)."""
    from benchmarks.preprocess import measure_setup, write_synthetic

    out = {}
    for size in sizes:
        users, items, n, layout = PREP_SHAPES[size]
        root = write_synthetic(data_dir / "benchmarks" / f"synthetic-{size}", users, items, n, layout)
        with tempfile.TemporaryDirectory() as cache:
            setup = measure_setup(root, Path(cache))
        assert setup["warm_equals_cold"], f"prep {size}: the cached samples differ from the built ones"
        out[size] = {
            "cold_s": setup["cold"][0],
            "warm_s": setup["warm"][0],
            "peak_rss_mb": setup["peak_rss_mib"],
            "cold_cpu_s": setup["cold"][1],
            "warm_cpu_s": setup["warm"][1],
            "warm_peak_rss_mb": setup["warm_peak_rss_mib"],
        }
    return out


def ddp_speedup(steps: int) -> dict[str, float]:
    """Training wall time (inside run.py, after startup) of `steps` global batches of 64: 1 process vs trainer=ddp_cpu
    (2 processes × 32 per device, same samples)."""
    times = {}
    for name, args in (("1proc", ["data.batch_size=64"]), ("2proc", ["trainer=ddp_cpu", "data.batch_size=32"])):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                str(ROOT / "run.py"),
                "experiment=ctr_lora",
                "logger=csv",
                "test=false",
                "trainer.max_epochs=1",
                f"+trainer.limit_train_batches={steps}",
                "+trainer.limit_val_batches=0",
                "~callbacks.model_checkpoint",
                "~callbacks.early_stopping",
                "~callbacks.rich_progress_bar",
                f"paths.log_dir={tmp}",
                *args,
            ]
            env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            times[name] = json.loads(next(Path(tmp).glob("*/runs/*/metrics.json")).read_text())["wall_time_s"]
    return {"speedup": times["1proc"] / times["2proc"], "wall_1proc_s": times["1proc"], "wall_2proc_s": times["2proc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--prep-sizes", nargs="+", default=["100k", "1m"], choices=list(PREP_SHAPES))
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--update", action="store_true", help="keep perf.json's other entries; re-measure the rest")
    args = parser.parse_args()
    from benchmarks.full_rank import benchmark as full_rank
    from benchmarks.startup import measure as startup

    parts = {
        "overhead": lambda: overhead(args.steps, args.data_dir),
        "startup": lambda: {"startup_s": startup(repeats=1)},
        "prep": lambda: {"prep": prep(args.prep_sizes, args.data_dir)},
        "full_rank": lambda: {"full_rank_users_per_s": full_rank(threads=(1, os.cpu_count()), repeats=2)},
        "ddp": lambda: {"ddp_cpu_2proc_speedup": ddp_speedup(args.steps)},
    }
    result: dict[str, Any] = {
        "device": "cpu",
        "threads": os.cpu_count(),
        "steps": args.steps,
        "startup_s": None,
        "prep": None,
        "full_rank_users_per_s": None,
        "ddp_cpu_2proc_speedup": None,
    }
    if args.update and RESULTS.is_file():
        result.update(json.loads(RESULTS.read_text()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for part, measure in parts.items():
        if part not in args.skip:
            result.update(measure())
            RESULTS.write_text(json.dumps(result, indent=2) + "\n")  # after each part: a later failure keeps the rest
    result["gpu"] = gpu_summary()
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


def gpu_summary() -> list[dict[str, Any]] | None:
    """The GPU records benchmarks/gpu.py wrote on a GPU machine (device, tokens/s, peak memory, MFU), else None."""
    if not GPU_RESULTS.is_file():
        return None
    keys = (
        "name",
        "device",
        "precision",
        "batch_size",
        "tokens_per_s",
        "steps_per_s",
        "peak_memory_gib",
        "achieved_tflops",
        "mfu_vs_spec_peak",
        "mfu_vs_measured_peak",
    )
    return [{k: r[k] for k in keys} for r in json.loads(GPU_RESULTS.read_text())]


def print_table(result: dict[str, Any]) -> None:
    """The headline numbers as a Markdown table."""
    rows = [
        (k, f"{result[k]:.3f}")
        for k in ("framework_overhead_ratio", "loader_to_model_ratio", "flops_utilisation")
        if k in result
    ]
    if result.get("startup_s"):
        s = result["startup_s"]
        rows += [
            ("startup: run.py --help (wall / CPU s)", f"{s['help']['wall_s']:.2f} / {s['help']['cpu_s']:.2f}"),
            (
                "startup: launch → first step (wall / CPU s)",
                f"{s['first_step']['wall_s']:.2f} / {s['first_step']['cpu_s']:.2f}",
            ),
        ]
    for size, p in (result.get("prep") or {}).items():
        if p.get("cold_s") is None:  # a run stopped before it finished (see its note)
            rows.append((f"prep {size}", p.get("note", "not measured")))
            continue
        cpu = f" (CPU {p['cold_cpu_s']:.1f} / {p['warm_cpu_s']:.1f})" if "cold_cpu_s" in p else ""
        rows.append(
            (
                f"prep {size}: cold s / warm s / peak RSS MB",
                f"{p['cold_s']:.1f} / {p['warm_s']:.1f} / {p['peak_rss_mb']:,.0f}{cpu}",
            )
        )
    for threads, by_items in (result.get("full_rank_users_per_s") or {}).items():
        for items, r in by_items.items():
            rows.append(
                (
                    f"full rank users/s, {int(items):,} items, {threads} thread(s): chunked / dense",
                    f"{r['chunked']:,} / {r['dense']:,} (per CPU-s {r['chunked_cpu']:,} / {r['dense_cpu']:,})",
                )
            )
    if result.get("ddp_cpu_2proc_speedup"):
        rows.append(("ddp_cpu 2-process speedup", f"{result['ddp_cpu_2proc_speedup']['speedup']:.2f}"))
    for r in result.get("gpu") or []:
        rows.append(
            (
                f"gpu {r['name']}: tokens/s / peak GiB / MFU",
                f"{r['tokens_per_s']:,.0f} / {r['peak_memory_gib']:.2f} / {r['mfu_vs_spec_peak']:.2%}",
            )
        )
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
