"""Training guards (Lightning callbacks, on by default in conf/callbacks/default.yaml): a non-finite loss or gradient
norm stops the run before the optimizer step (the last good checkpoint stays the newest), and SIGTERM / SIGUSR1
save a resumable checkpoint and exit non-zero."""

from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from m6rec.utils.errors import OneLineError

log = logging.getLogger(__name__)
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a job killed by SIGTERM


class NonFiniteError(OneLineError, RuntimeError):
    """The training loss or gradient norm became NaN or infinite (the one-line message names the step and value)."""


class FiniteGuard(L.Callback):
    """Raise `NonFiniteError` when the training loss (before backward) or the total gradient norm (before the optimizer
    step, so before clipping) is not finite: the weights never take the bad step, and no checkpoint saves it."""

    def __init__(self, check_grad_norm: bool = True):
        self.check_grad_norm = check_grad_norm

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(
                f"training loss is {value} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); lower task.optimizer.lr or check the data"
            )

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self.check_grad_norm or trainer.precision == "16-mixed":  # fp16 AMP: its GradScaler skips inf steps
            return
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        if not math.isfinite(norm):
            raise NonFiniteError(
                f"gradient norm is {norm} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); lower task.optimizer.lr or check the data"
            )


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM (Lightning's own handler stops the loop) or SIGUSR1 (outside SLURM; under SLURM Lightning's
    SLURMEnvironment plugin saves an hpc checkpoint and requeues), save `<dirpath>/last.ckpt`; Lightning then
    re-raises its `SIGTERMException`, which run.py turns into exit code 143."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self._previous: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not SLURMEnvironment.detect() and hasattr(signal, "SIGUSR1"):
            self._previous = signal.signal(signal.SIGUSR1, _as_sigterm)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # a full, resumable checkpoint
        log.error(
            "Preempted at step %d (epoch %d); checkpoint saved: resume with ckpt_path=%s",
            trainer.global_step,
            trainer.current_epoch,
            self.path,
        )


def _as_sigterm(signum: int, frame: Any) -> None:
    """SIGUSR1 outside SLURM: treated as SIGTERM (Lightning's handler stops the loop at the next batch)."""
    os.kill(os.getpid(), signal.SIGTERM)
