"""Shared test helpers: compose the real config the way run.py does, with test-sized overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

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


FAULT_RUN = [  # the default run at test size, quiet: what the fault tests start from
    "experiment=ctr_lora",
    "logger=csv",
    "data.batch_size=32",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
]


def fault_config(tmp_path: Path, ml100k_dir: Path, *overrides: str) -> DictConfig:
    """FAULT_RUN on the fixture data (cache under `tmp_path`, no logger) plus `overrides`, outputs in tmp_path/run."""
    data = [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "~logger"]
    return compose_config([*FAULT_RUN, *data, *overrides], tmp_path / "run")


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


def auc_by_hand(scores: list[float], labels: list[int]) -> float:
    """The share of (positive, negative) pairs the scores order correctly, a tie counting one half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


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
                self.batches.append(len(next(iter(batch.values()))))  # rows: input_ids, a baseline's features / user
                self.seen += self.batches[-1]

            def on_test_end(self, trainer, pl_module):
                metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
                path = Path(out_dir) / f"rank{trainer.global_rank}.json"
                record = {"metrics": metrics, "seen": self.seen, "batches": self.batches, "world": trainer.world_size}
                path.write_text(json.dumps(record))

        return _Dump()


INIT_SOURCES = {"p1_sasrec_hybrid_from_text": "p1_sasrec_text"}  # experiment (init_weights.required) -> its source's


def experiment_data(cfg, ml100k_dir: Path, tmp_path: Path) -> list[str]:
    """Point an experiment's behaviour data (wherever its data config nests it) at a fixture; an experiment that
    starts from a finished feature run (task.features.checkpoint: ???) or from another run's weights
    (init_weights.required) gets one built on the fixture."""
    if cfg.init_weights.required:
        source = untrained_checkpoint(INIT_SOURCES[cfg.task_name], ml100k_dir, tmp_path)[0]
        return [*_fixture_data(cfg, ml100k_dir, tmp_path), f"init_weights.path={source}"]
    features = cfg.task.get("features")
    if isinstance(features, DictConfig) and OmegaConf.is_missing(features, "checkpoint"):
        return [
            *_fixture_data(cfg, ml100k_dir, tmp_path),
            f"task.features.checkpoint={feature_checkpoint(ml100k_dir, tmp_path)[0]}",
        ]
    return _fixture_data(cfg, ml100k_dir, tmp_path)


def _fixture_data(cfg, ml100k_dir: Path, tmp_path: Path) -> list[str]:
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


class PoisonWeights:
    """A Lightning callback (`+callbacks.poison._target_=tests.helpers.PoisonWeights +callbacks.poison.step=N`) that
    sets every trainable weight to NaN before training step N: the loss of that step is NaN."""

    def __new__(cls, step: int):
        import lightning as L
        import torch

        class _Poison(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == step:
                    with torch.no_grad():
                        for p in pl_module.parameters():
                            if p.requires_grad:
                                p.fill_(float("nan"))

        return _Poison()


class PauseAt:
    """A Lightning callback (`+callbacks.pause._target_=tests.helpers.PauseAt +callbacks.pause.step=N
    +callbacks.pause.marker=FILE`) that writes FILE before training step N and waits there (up to 60 s) until the
    process receives SIGTERM, so a test can signal a real run at a known step."""

    def __new__(cls, step: int, marker: str):
        import time

        import lightning as L

        class _Pause(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step != step:
                    return
                Path(marker).write_text(str(step))
                deadline = time.time() + 60
                while not trainer.received_sigterm and time.time() < deadline:
                    time.sleep(0.05)

        return _Pause()


class StepFile:
    """A Lightning callback (`+callbacks.steps._target_=tests.helpers.StepFile +callbacks.steps.path=FILE`) that
    writes the global step to FILE after every training step, and sleeps `delay` s so a test can kill it mid-run."""

    def __new__(cls, path: str, delay: float = 0.2):
        import time

        import lightning as L

        class _Steps(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                tmp = Path(f"{path}.tmp")
                tmp.write_text(str(trainer.global_step))
                tmp.replace(path)  # atomic: a reader never sees a half-written (empty) file
                time.sleep(delay)

        return _Steps()


class CrashAt:
    """A Lightning callback (`+callbacks.crash._target_=tests.helpers.CrashAt +callbacks.crash.step=N`) that raises
    RuntimeError before training step N: a crash after the step checkpoints before it."""

    def __new__(cls, step: int):
        import lightning as L

        class _Crash(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == step:
                    raise RuntimeError(f"crash at step {step}")

        return _Crash()


def untrained_checkpoint(experiment: str, ml100k_dir: Path, tmp_path: Path) -> tuple[Path, object, object]:
    """The experiment's system built on the fixture, saved as a Lightning checkpoint would hold it (untrained: its
    weights are random, which is what a loading test needs). Returns (path, datamodule, system)."""
    import torch

    from m6rec.build import build_datamodule_and_system

    out = tmp_path / experiment
    cfg = compose_config([f"experiment={experiment}"], out)
    cfg = compose_config([f"experiment={experiment}", *_fixture_data(cfg, ml100k_dir, tmp_path)], out)
    datamodule, system = build_datamodule_and_system(cfg)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": system.state_dict()}, out / "best.ckpt")
    return out / "best.ckpt", datamodule, system


def feature_checkpoint(ml100k_dir: Path, tmp_path: Path) -> tuple[Path, object, object]:
    """An untrained p2_deepfm_idprofile checkpoint on the fixture (what `task.features.checkpoint` loads)."""
    return untrained_checkpoint("p2_deepfm_idprofile", ml100k_dir, tmp_path)


def fit_one_batch(system, batch: dict, steps: int, lr: float) -> list[float]:
    """`steps` AdamW steps (no weight decay) of `system.loss` on one batch over its trainable parameters; losses."""
    import torch

    optimizer = torch.optim.AdamW([p for p in system.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = system.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
