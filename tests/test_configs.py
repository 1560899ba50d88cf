"""Every experiment composes and instantiates (data, model, system, trainer) without training."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from benchmarks import quality
from m6rec.build import build_datamodule_and_system
from m6rec.peft import apply_peft, count_parameters
from tests.helpers import ROOT, compose_config, experiment_data

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def test_experiments_are_on_the_search_path():
    assert "ctr_lora" in EXPERIMENTS
    assert (ROOT / "conf" / "experiment").resolve() == (ROOT / "experiments").resolve()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("trainer", ["default", "ddp_cpu", "gpu", "ddp", "fsdp"])
def test_experiment_composes(experiment: str, trainer: str, tmp_path: Path):
    cfg = compose_config([f"experiment={experiment}", f"trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer" and cfg.task._target_ and cfg.data._target_
    assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric
    assert cfg.optimized_metric.startswith("val/")  # a sweeper must never optimise a test metric


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_instantiates(experiment: str, tmp_path: Path, ml100k_dir: Path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    cfg = compose_config([f"experiment={experiment}", *experiment_data(cfg, ml100k_dir, tmp_path)], tmp_path)
    _, system = build_datamodule_and_system(cfg)
    assert f"{type(system).__module__}.{type(system).__name__}" == cfg.task._target_  # the task config's system
    trainer = instantiate(cfg.trainer, callbacks=[instantiate(c) for c in cfg.callbacks.values()], logger=False)
    checkpoint = trainer.checkpoint_callback  # keeps the best epoch by the metric a sweeper optimises
    assert (checkpoint.monitor, checkpoint.mode) == (cfg.optimized_metric, cfg.optimized_mode)
    assert count_parameters(system.model)["trainable"] > 0 or not getattr(system, "trains", True)  # Pop, EASE, …


def test_peft_choice_changes_what_is_trained(tmp_path: Path, ml100k_dir: Path):
    counts = {}
    for peft in ("lora", "none"):
        cfg = compose_config(
            ["experiment=ctr_lora", f"peft={peft}", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path}"], tmp_path
        )
        datamodule = instantiate(cfg.data)
        backbone = instantiate(cfg.model.backbone, vocab_size=len(datamodule.tokenizer))
        system = instantiate(cfg.task, backbone=apply_peft(backbone, instantiate(cfg.peft)))
        counts[peft] = count_parameters(system.model)
    assert counts["none"]["trainable"] == counts["none"]["total"]
    # LoRA r=16 on c_attn (128→384), c_proj (128→128, 512→128) and c_fc (128→512) in 2 layers, plus the 129-weight head
    lora = 2 * 16 * ((128 + 384) + (128 + 128) + (512 + 128) + (128 + 512)) + 129
    assert counts["lora"]["trainable"] == lora
    assert counts["lora"]["total"] == counts["none"]["total"] + lora - 129


@pytest.mark.parametrize("data", sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")))
def test_every_data_config_names_a_known_dataset(data: str, tmp_path: Path):
    from m6rec.data.datamodules.behaviour_log import LOADERS

    cfg = compose_config(["experiment=ctr_lora", f"data={data}"], tmp_path)
    # a behaviour-log config, or one that wraps them (a derived text corpus, the tasks of a multi-task run)
    behaviour_logs = (
        [cfg.data.behaviour] if cfg.data.get("behaviour") else list(cfg.data.get("datamodules", {}).values())
    )
    for node in behaviour_logs or [cfg.data]:
        if "files" in node and "dataset" not in node:
            continue  # a corpus of text files only
        assert node.dataset in LOADERS and node.templates.prompt  # inherited from ml100k.yaml


def test_slurm_launcher_asks_for_one_task_per_gpu(tmp_path: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "experiment=ctr_lora",
                "trainer=ddp",
                "trainer.devices=8",
                "trainer.num_nodes=2",
            ],
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (cfg.hydra.launcher.nodes, cfg.hydra.launcher.gpus_per_node, cfg.hydra.launcher.tasks_per_node) == (2, 8, 8)
    assert cfg.hydra.launcher.timeout_min == 720 and cfg.hydra.launcher.max_num_timeout == 3


@pytest.mark.parametrize(("mode", "direction"), [("max", "maximize"), ("min", "minimize")])
def test_optuna_direction_follows_optimized_mode(mode: str, direction: str):
    """A val/rmse or val/loss search must minimise: the sweeper's direction is derived from `optimized_mode`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hparams_search=ctr_optuna", f"optimized_mode={mode}"], return_hydra_config=True
        )
    assert cfg.hydra.sweeper.direction == direction


@pytest.mark.parametrize(
    ("experiment", "row_name", "lm_based"),
    [
        ("p2_deepfm_itemknn", "deepfm_idprofile_iddrop0.5_below50_itemknn", False),
        ("p2_deepfm_knn", "deepfm_idprofile_iddrop0.5_below50_bothknn", False),
        ("p2_deepfm_mpnet_codes_knn", "deepfm_text_profile_iddrop0.5_below50_mpnet_bothknn_codes", True),
        ("p2_lr_knn", "lr_idprofile_bothknn", False),
        ("p2_lr_mpnet_knn", "lr_mpnet_bothknn", True),
    ],
)
def test_the_knn_experiments_are_their_quality_rows(tmp_path: Path, experiment: str, row_name: str, lm_based: bool):
    """Each KNN experiment and benchmarks/quality.py's row for it compose to the same model and task."""
    row = next(r for r in quality.MODELS if r["model"] == row_name)
    by_row, by_experiment = (
        compose_config(overrides, tmp_path) for overrides in (row["overrides"], [f"experiment={experiment}"])
    )
    assert by_row.model == by_experiment.model and by_row.task == by_experiment.task
    assert by_experiment.model.features.neighbours == 3 and by_experiment.model.lm_based == lm_based
