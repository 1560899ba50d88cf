"""Build a run's components from its config, the same way for training (run.py) and inference (m6rec.recommend)."""

from __future__ import annotations

import inspect

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from m6rec.models.speedups import enable_gradient_checkpointing, maybe_compile
from m6rec.peft import apply_peft


def model_argument(task: DictConfig) -> str:
    """The name of the task system's first argument: the model part it trains, whose recipe `task.<name>` holds
    (e.g. `backbone: ${model.backbone}`, or pretraining's `model:` = the chosen model with its LM head)."""
    name = next(iter(inspect.signature(get_class(task._target_)).parameters), None)
    if name is None or not isinstance(task.get(name), DictConfig):
        raise ValueError(
            f"task.{name}: {task._target_} takes its model part first; the task config must give its "
            "recipe there (e.g. `backbone: ${model.backbone}`)"
        )
    return name


def build_datamodule_and_system(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """Seed; then data → the model part the task config names, sized by the data (`model_inputs`) → PEFT → the task
    system, given that part as its first argument. No step depends on which task or model family it is.

    Seeding first makes a random-init model identical on every call, which adapter-only checkpoints rely on.
    `model.gradient_checkpointing` / `model.compile` (m6rec.models.speedups) apply to that part / the system's model.
    """
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    part = model_argument(cfg.task)
    model = instantiate(cfg.task[part], **model_inputs(datamodule))
    model = enable_gradient_checkpointing(model, cfg.model.get("gradient_checkpointing", False))
    system = instantiate(cfg.task, **{part: apply_peft(model, instantiate(cfg.peft))})
    maybe_compile(system.model, cfg.model.get("compile", False))
    return datamodule, system


def model_inputs(datamodule: L.LightningDataModule) -> dict:
    """What the data tells a model about its inputs: the DataModule's own `model_inputs()` (the ID baselines: their
    catalogue or feature ids), else the size of its tokenizer's vocabulary."""
    own = getattr(datamodule, "model_inputs", None)
    return own() if own is not None else {"vocab_size": len(datamodule.tokenizer)}
