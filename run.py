"""Train and test one experiment: seed → instantiate → fit → test → return the metric a sweeper optimises.

python run.py experiment=ctr_lora
python run.py -m experiment=ctr_lora peft=lora,none seed=0,1,2
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("M6REC_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")  # no account, no network unless the user asks for it
os.environ.setdefault("WANDB_INIT_TIMEOUT", "20")  # online but unreachable: offline after 20 s (docs/reliability.md)

import hydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from m6rec.utils.config_check import check_config  # noqa: E402
from m6rec.utils.config_tree import print_config_tree  # noqa: E402
from m6rec.utils.errors import USER_ERROR_EXIT_CODE, exit_if_user_error, run_main  # noqa: E402
from m6rec.utils.extras import MissingExtra, check_overrides  # noqa: E402
from m6rec.utils.resolvers import register_resolvers  # noqa: E402
from m6rec.utils.run_record import write_metrics, write_run_start  # noqa: E402

log = logging.getLogger("m6rec")
register_resolvers()


def train(cfg: DictConfig) -> dict:
    """Run one job and return its metrics (best validation value, test metrics, sizes, wall time)."""
    from m6rec.build import build_datamodule_and_system  # here, not at the top: `run.py --help` skips Lightning
    from m6rec.metrics.score_dump import ScoreDump
    from m6rec.peft import count_parameters
    from m6rec.utils.init_weights import initial_checkpoint, load_initial_weights

    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    check_config(cfg)  # types and local folders, before any data work
    init_from = initial_checkpoint(cfg)  # before any data work: a wrong path fails at once
    datamodule, system = build_datamodule_and_system(cfg)
    if init_from is not None:  # another run's weights, with a fresh optimizer from epoch 0 (not a resume)
        load_initial_weights(system, init_from, cfg.init_weights.get("rename"))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if cfg.get("eval", {}).get("dump_scores"):  # docs/protocols.md
        callbacks.append(ScoreDump(output_dir))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        if cfg.extras.print_config:
            print_config_tree(cfg)
        write_run_start(cfg, output_dir, ROOT)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict = {"params": count_parameters(system)}
    ckpt_path = _resolve_ckpt_path(cfg.ckpt_path, output_dir)
    if cfg.train:
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
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
        best = metrics.get("best_checkpoint") or (None if cfg.train else ckpt_path)  # train=false: test ckpt_path
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


def _resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """`ckpt_path=last`: the newest checkpoint of this task's earlier runs (m6rec.systems.resume); else as given."""
    if ckpt_path != "last":
        return ckpt_path
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from m6rec.systems.resume import newest_checkpoint

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    found = newest_checkpoint(output_dir, multirun)
    if found is None:
        log.warning("ckpt_path=last: no earlier checkpoint next to %s; training from the start", output_dir)
        return None
    log.info("ckpt_path=last: resuming from %s", found)
    return str(found)


def _finish_wandb(metrics: dict | None, exit_code: int = 0) -> None:
    """Put the best/test metrics in this job's W&B summary and close the run (one run per multirun job); a failed job
    (`exit_code` != 0) is finished as failed, so the next job of a sweep starts a run of its own."""
    if "wandb" not in sys.modules:  # W&B never imported: no run to close
        return
    import wandb

    if wandb.run is not None:
        if metrics:
            wandb.run.summary.update({k: v for k, v in metrics.items() if "/" in k})
        offline = wandb.run.settings.mode in ("offline", "dryrun")
        run_dir = Path(wandb.run.dir).parent
        wandb.finish(exit_code=exit_code)
        if offline:
            log.info("W&B run saved offline; upload with: wandb sync %s", run_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from m6rec.systems.guards import PREEMPTED_EXIT_CODE

    try:
        metrics = train(cfg)
    except SIGTERMException:  # preempted: PreemptionCheckpoint saved last.ckpt; a scheduler or sweep sees a failure
        _finish_wandb(None, exit_code=PREEMPTED_EXIT_CODE)
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    except BaseException as err:
        log.error("Job failed: %s: %s", type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        _finish_wandb(None, exit_code=1)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            exit_if_user_error(err, bool(cfg.get("debug")))
        raise
    value = metrics.get(cfg.optimized_metric)
    return float(value) if value is not None else None


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])  # a sweeper or launcher from an extra that is not installed: one line, exit 2
    except MissingExtra as e:
        print(f"Error: run.py: {e}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    sys.exit(run_main(main))
