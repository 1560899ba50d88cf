"""Build a run's components from its config, the same way for training (run.py) and inference (m6rec.recommend)."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from m6rec.models.speedups import enable_gradient_checkpointing, maybe_compile
from m6rec.peft import apply_peft
from m6rec.systems.pretrain import LM_OBJECTIVES


def build_datamodule_and_system(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """Seed, then instantiate `cfg.data` and either a feature model (`model.features`, sized to the data's feature
    ids) or the backbone sized to its tokenizer (the LM with its head when the task is
    pretraining: `task.objective` set), the PEFT wrapper and the task system.

    Seeding first makes a random-init backbone identical on every call, which adapter-only checkpoints rely on.
    `model.gradient_checkpointing` / `model.compile` (m6rec.models.speedups) apply to the backbone / the system's model.
    """
    checkpointing, compiled = cfg.model.get("gradient_checkpointing", False), cfg.model.get("compile", False)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    if cfg.model.get("features") is not None:  # a classic feature-id baseline (model=lr|fm|deepfm|mf): no LM
        model = instantiate(cfg.model.features, num_features=datamodule.num_features,
                            field_slots=datamodule.field_slots)  # fmt: skip
        return datamodule, instantiate(cfg.task, model=model)
    if cfg.model.get("_target_"):  # an ID-based recommender (conf/model/sasrec.yaml, …): no tokenizer, no backbone
        return datamodule, instantiate(cfg.task, model=instantiate(cfg.model, catalogue=datamodule.catalogue))
    tokenizer = datamodule.tokenizer
    if cfg.task.get("objective") in LM_OBJECTIVES:  # pretraining: the task trains the model with its LM head
        lm = instantiate(cfg.model.lm, vocab_size=len(tokenizer), objective=cfg.task.objective)
        lm = apply_peft(enable_gradient_checkpointing(lm, checkpointing), instantiate(cfg.peft))
        system = instantiate(cfg.task, model=lm, tokenizer=tokenizer)
        maybe_compile(system.model, compiled)
        return datamodule, system
    if cfg.model.get("layers_online") is not None and "layers_online" not in cfg.task:
        raise ValueError(f"model.layers_online={cfg.model.layers_online}: late interaction scores CTR prompts "
                         f"(task=ctr), not {cfg.task._target_.rsplit('.', 1)[-1]}")  # fmt: skip
    backbone = enable_gradient_checkpointing(instantiate(cfg.model.backbone, vocab_size=len(tokenizer)), checkpointing)
    system = instantiate(cfg.task, backbone=apply_peft(backbone, instantiate(cfg.peft)))
    maybe_compile(system.model, compiled)
    return datamodule, system
