"""W&B logging that never blocks a run on the network: online mode waits at most `WANDB_INIT_TIMEOUT` seconds (run.py
sets 20) for the server, then logs offline (`wandb sync` uploads later); see docs/reliability.md."""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.wandb import WandbLogger as LightningWandbLogger

log = logging.getLogger(__name__)


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger whose run, when the server cannot be reached in time, falls back to offline mode."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        import wandb

        try:
            return super().experiment
        except (wandb.Error, TimeoutError, OSError) as err:
            if self._wandb_init.get("mode") == "offline" or os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
                raise
            log.warning(
                "W&B server unreachable (%s); logging offline instead: upload later with `wandb sync`",
                str(err).splitlines()[0] if str(err) else type(err).__name__,
            )
            self._experiment = None
            self._wandb_init["mode"] = "offline"
            return super().experiment
