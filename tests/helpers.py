"""Shared test helpers: compose the real config the way run.py does, with test-sized overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from m6rec.utils.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/config.yaml with overrides, resolve hydra's own fields, point outputs at `output_dir`."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.extras.print_config = False
        del cfg["hydra"]  # as in a real run: hydra's own node lives in HydraConfig, not in the job's config
    return cfg


def run_cli(
    args: list[str], tmp_path: Path, timeout: int = 600, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` from the repository with W&B disabled (unless `env` says) and a private log dir."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "M6REC_ROOT": str(ROOT), **(env or {})}
    log_dir = [] if any(a.startswith("--config-path") for a in args) else [f"paths.log_dir={tmp_path / 'logs'}"]
    cmd = [sys.executable, str(ROOT / "run.py"), *args, *log_dir]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"run.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


class DumpTestMetrics:
    """A Lightning callback (added with `+callbacks.dump._target_=tests.helpers.DumpTestMetrics`) that writes,
    per rank, the test metrics it sees, how many test samples that rank scored and the size of each of its batches."""

    def __new__(cls, out_dir: str):
        import json

        import lightning as L

        class _Dump(L.Callback):
            def __init__(self) -> None:
                self.seen, self.batches = 0, []

            def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
                self.batches.append(len(batch["input_ids"]))
                self.seen += self.batches[-1]

            def on_test_end(self, trainer, pl_module):
                metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
                path = Path(out_dir) / f"rank{trainer.global_rank}.json"
                record = {"metrics": metrics, "seen": self.seen, "batches": self.batches, "world": trainer.world_size}
                path.write_text(json.dumps(record))

        return _Dump()


def experiment_data(cfg, ml100k_dir: Path, tmp_path: Path) -> list[str]:
    """Point an experiment's behaviour data (wherever its data config nests it) at a fixture."""
    cache = f"paths.data_dir={tmp_path / 'cache'}"
    if cfg.data.get("behaviour"):  # a corpus derived from a behaviour log
        return [f"data.behaviour.root={ml100k_dir}", cache]
    if cfg.data.get("datamodules"):  # multi-task
        return [*(f"data.datamodules.{name}.root={ml100k_dir}" for name in cfg.data.datamodules), cache]
    if cfg.data.dataset == "amazon":
        from tests.fixtures import make_log, write_amazon

        root = write_amazon(tmp_path / "amazon", str(cfg.data.source.version), make_log())
        return [f"data.root={root}", "data.source.category=All_Beauty", "data.k_core=0", cache]
    return [f"data.root={ml100k_dir}", cache]
