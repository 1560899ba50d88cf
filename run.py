"""Train and test one experiment: seed → instantiate → fit → test → return the metric a sweeper optimises.

    python run.py experiment=ctr_lora
    python run.py -m experiment=ctr_lora peft=lora,none seed=0,1,2
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("M6REC_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")  # no account, no network unless the user asks for it

import hydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from m6rec.utils.config_tree import print_config_tree  # noqa: E402
from m6rec.utils.resolvers import register_resolvers  # noqa: E402
from m6rec.utils.run_record import write_metrics, write_run_start  # noqa: E402

log = logging.getLogger("m6rec")
register_resolvers()


def train(cfg: DictConfig) -> dict:
    """Run one job and return its metrics (best validation value, test metrics, sizes, wall time)."""
    from m6rec.build import build_datamodule_and_system  # here, not at the top: `run.py --help` skips Lightning
    from m6rec.peft import count_parameters

    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    datamodule, system = build_datamodule_and_system(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        if cfg.extras.print_config:
            print_config_tree(cfg)
        write_run_start(cfg, output_dir, ROOT)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict = {"params": count_parameters(system.model)}
    if cfg.train:
        trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            metrics["best_checkpoint"] = checkpoint.best_model_path
            if Path(checkpoint.best_model_path).is_file():  # (not on other nodes' disks under multi-node DDP)
                metrics["checkpoint_mb"] = Path(checkpoint.best_model_path).stat().st_size / 2**20
            if checkpoint.best_model_score is not None:  # None when nothing was validated (limit_val_batches=0)
                metrics[cfg.optimized_metric] = float(checkpoint.best_model_score)
        elif cfg.optimized_metric in trainer.callback_metrics:  # no checkpointing: the last validation value
            metrics[cfg.optimized_metric] = float(trainer.callback_metrics[cfg.optimized_metric])
    if cfg.test:
        best = metrics.get("best_checkpoint") or (None if cfg.train else cfg.ckpt_path)  # train=false: test ckpt_path
        if best is None:
            log.warning("No best checkpoint (fast_dev_run or no validation): testing the current weights")
        trainer.test(system, datamodule=datamodule, ckpt_path=best)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics["data"] = datamodule.stats
    metrics["wall_time_s"] = time.time() - start

    if trainer.is_global_zero:
        path = write_metrics(output_dir, metrics)
        log.info("Metrics: %s", {k: v for k, v in metrics.items() if "/" in k})
        log.info("Run directory: %s (metrics in %s)", output_dir, path.name)
        _finish_wandb(metrics)
    return metrics


def _finish_wandb(metrics: dict) -> None:
    """Put the best/test metrics in this job's W&B summary and close the run (one run per multirun job)."""
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update({k: v for k, v in metrics.items() if "/" in k})
        offline = wandb.run.settings.mode in ("offline", "dryrun")
        run_dir = Path(wandb.run.dir).parent
        wandb.finish()
        if offline:
            log.info("W&B run saved offline; upload with: wandb sync %s", run_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.optimized_metric)
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
