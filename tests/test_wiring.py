"""Each task config owns its wiring: `task.<first argument>` is the recipe of the model part the system trains, and
build.py applies the same steps (data → tokenizer → model part → PEFT → system) to every task, with no task branch."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from m6rec import build
from m6rec.models.backbone import build_lm
from m6rec.peft import apply_peft
from tests.helpers import ROOT, compose_config, experiment_data

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))


def test_build_has_no_branch():
    source = textwrap.dedent(inspect.getsource(build.build_datamodule_and_system))
    branches = [type(n).__name__ for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.If, ast.IfExp, ast.Match))]
    assert branches == []


def test_every_task_config_is_built_by_an_experiment(tmp_path: Path):
    """So the parametrised equivalence test below covers every task config's wiring."""
    chosen = {compose_config([f"experiment={e}"], tmp_path).task._target_ for e in EXPERIMENTS}
    assert chosen == {compose_config([f"task={t}"], tmp_path).task._target_ for t in TASKS}


def build_with_branches(cfg) -> L.LightningModule:
    """The wiring build.py decided by branching before the task configs owned it: a feature model sized to the data's
    feature ids, an ID model built for its catalogue, a task with an LM `objective` trains the chosen model with that
    LM head (given the tokenizer), every other task the backbone."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    if cfg.model.get("features") is not None:
        features = {"num_features": datamodule.num_features, "field_slots": datamodule.field_slots}
        return instantiate(cfg.task, model=instantiate(cfg.model.features, **features))
    if cfg.model.get("_target_"):
        return instantiate(cfg.task, model=instantiate(cfg.model, catalogue=datamodule.catalogue))
    tokenizer = datamodule.tokenizer
    if cfg.task.get("objective") in ("clm", "mlm", "span"):
        backbone = cfg.model.backbone
        lm = build_lm(len(tokenizer), cfg.task.objective, backbone.config, backbone.path)
        return instantiate(cfg.task, model=apply_peft(lm, instantiate(cfg.peft)), tokenizer=tokenizer)
    backbone = instantiate(cfg.model.backbone, vocab_size=len(tokenizer))
    return instantiate(cfg.task, backbone=apply_peft(backbone, instantiate(cfg.peft)))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_builds_what_the_branching_build_built(experiment: str, tmp_path: Path, ml100k_dir: Path):
    """Bit-identical parameters and buffers (so the same metrics for the same seed) without any task branch."""
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    cfg = compose_config([f"experiment={experiment}", *experiment_data(cfg, ml100k_dir, tmp_path)], tmp_path)
    _, system = build.build_datamodule_and_system(cfg)
    assert build.model_argument(cfg.task) == next(iter(inspect.signature(type(system)).parameters))
    expected = build_with_branches(cfg).state_dict()
    state = system.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)


def test_a_task_config_without_its_model_part_is_a_config_error(tmp_path: Path):
    cfg = compose_config(["experiment=ctr_lora", "~task.backbone"], tmp_path)
    with pytest.raises(ValueError, match=r"task.backbone: m6rec.systems.ctr.CTRSystem takes its model part first"):
        build.model_argument(cfg.task)
