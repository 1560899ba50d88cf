"""Build a run's components from its config, the same way for training (run.py) and inference (m6rec.recommend)."""

from __future__ import annotations

import inspect

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from m6rec.peft import apply_peft


def model_argument(task: DictConfig) -> str:
    """The name of the task system's first argument: the model part it trains, whose recipe `task.<name>` holds
    (e.g. `backbone: ${model.backbone}`, or pretraining's `model:` = the chosen model with its LM head)."""
    name = next(iter(inspect.signature(get_class(task._target_)).parameters), None)
    if name is None or not isinstance(task.get(name), DictConfig):
        raise ValueError(f"task.{name}: {task._target_} takes its model part first; the task config must give its "
                         "recipe there (e.g. `backbone: ${model.backbone}`)")  # fmt: skip
    return name


def build_datamodule_and_system(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """Seed; then data → tokenizer → the model part the task config names (built for the tokenizer's vocabulary) →
    PEFT → the task system, given that part as its first argument. No step depends on which task it is.

    Seeding first makes a random-init model identical on every call, which adapter-only checkpoints rely on.
    """
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    tokenizer = datamodule.tokenizer
    part = model_argument(cfg.task)
    model = apply_peft(instantiate(cfg.task[part], vocab_size=len(tokenizer)), instantiate(cfg.peft))
    return datamodule, instantiate(cfg.task, **{part: model})
