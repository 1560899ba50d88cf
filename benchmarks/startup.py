"""Startup cost: `python run.py --help`, and the time from launching run.py to its first training step.

    python benchmarks/startup.py               # median of 3 of each, ML-100K, the default experiment, logger=csv
    python benchmarks/startup.py --repeats 1 --overrides experiment=ctr_lora

Each measurement is a fresh `python run.py` process. The first-step time is wall seconds from launch to the first
`on_train_batch_start` of a `trainer.fast_dev_run=1` run (FirstStepTimer below, added as an extra callback), and
the CPU seconds (user + system) that process had used by then: steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class FirstStepTimer:
    """Lightning callback: at the first training batch, write {"wall_s", "cpu_s"} since launch to `path` (launch
    time from the environment variable M6REC_LAUNCH_TIME, a time.time() stamp)."""

    def __new__(cls, path: str):
        import lightning as L

        class _Timer(L.Callback):
            def __init__(self) -> None:
                self.done = False

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if not self.done:
                    wall = time.time() - float(os.environ["M6REC_LAUNCH_TIME"])
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    Path(path).write_text(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}))
                    self.done = True

        return _Timer()


def _launch(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `python run.py ARGS` to completion; its wall seconds and its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env={**env, "M6REC_LAUNCH_TIME": str(start)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"run.py {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.time() - start, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(repeats: int = 3, overrides: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Median wall / CPU seconds of `run.py --help` and of launch → first training step (fast_dev_run)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    helps = [_launch(["--help"], env) for _ in range(repeats)]
    firsts = []
    with tempfile.TemporaryDirectory() as tmp:
        timer = Path(tmp) / "first_step.json"
        args = [
            "logger=csv",
            "+trainer.fast_dev_run=1",
            f"paths.log_dir={tmp}/logs",
            "extras.print_config=false",
            "+callbacks.first_step._target_=benchmarks.startup.FirstStepTimer",
            f"+callbacks.first_step.path={timer}",
            *overrides,
        ]
        _launch(args, env)  # untimed: fills the dataset / tokenizer caches, as for any run after the first
        for _ in range(repeats):
            _launch(args, env)
            firsts.append(json.loads(timer.read_text()))
    return {
        "help": {"wall_s": statistics.median(w for w, _ in helps), "cpu_s": statistics.median(c for _, c in helps)},
        "first_step": {k: statistics.median(f[k] for f in firsts) for k in ("wall_s", "cpu_s")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overrides", nargs="*", default=[], help="extra run.py overrides for the first-step run")
    args = parser.parse_args()
    result = measure(args.repeats, tuple(args.overrides))
    print("| measurement | wall s | CPU s |\n|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} |")


if __name__ == "__main__":
    main()
