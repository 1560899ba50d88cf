"""Accelerator features as configs: every trainer config composes (multi-node recipes too), the CPU ones run;
gradient checkpointing keeps loss and gradients; torch.compile switch; LoRA merged for testing keeps outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import run
from m6rec.build import build_datamodule_and_system
from m6rec.peft.merge import merged_copy
from tests.helpers import ROOT, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")
TRAINERS = sorted(p.stem for p in (ROOT / "conf" / "trainer").glob("*.yaml"))
QUIET = ["~logger", "~callbacks.rich_progress_bar", "~callbacks.model_summary"]


def _cfg(tmp_path: Path, ml100k_dir: Path, *overrides: str):
    data = [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "data.batch_size=16"]
    return compose_config(["experiment=ctr_lora", *data, *QUIET, *overrides], tmp_path)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_config_composes(trainer: str, tmp_path: Path):
    cfg = compose_config([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.accumulate_grad_batches == 1 and cfg.trainer.gradient_clip_algorithm == "norm"
    assert cfg.trainer.gradient_clip_val == 1.0  # clipping on by default (issue 13); null turns it off
    if trainer in ("gpu", "ddp", "fsdp"):
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"


def test_multi_node_recipes_compose(tmp_path: Path):
    """The docs' SLURM and torchrun recipes (docs/performance.md): 2 nodes × 4 GPUs."""
    slurm = compose_config(
        ["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4", "hydra/launcher=slurm"], tmp_path
    )
    assert (slurm.trainer.num_nodes, slurm.trainer.devices, slurm.trainer.strategy) == (2, 4, "ddp")
    fsdp = compose_config(["trainer=fsdp", "trainer.num_nodes=2", "trainer.accumulate_grad_batches=4"], tmp_path)
    assert fsdp.trainer.strategy._target_ == "lightning.pytorch.strategies.FSDPStrategy"
    assert fsdp.trainer.num_nodes == 2 and fsdp.trainer.accumulate_grad_batches == 4


def test_cpu_trainer_runs_with_accumulation_clipping_checkpointing_and_merged_test(tmp_path: Path, ml100k_dir: Path):
    cfg = _cfg(
        tmp_path,
        ml100k_dir,
        "+trainer.fast_dev_run=2",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_algorithm=value",
        "trainer.gradient_clip_val=0.5",
        "model.gradient_checkpointing=true",
        "+callbacks.merge_lora._target_=m6rec.peft.merge.MergeLoraForTest",
    )
    metrics = run.train(cfg)
    assert 0.0 < metrics["test/auc"] < 1.0 and metrics["test/logloss"] > 0


def _loss_and_grads(cfg) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    datamodule, system = build_datamodule_and_system(cfg)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    system.train()
    loss = system.loss(batch)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in system.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_gradient_checkpointing_keeps_loss_and_gradients(peft: str, tmp_path: Path, ml100k_dir: Path):
    plain = _loss_and_grads(_cfg(tmp_path, ml100k_dir, f"peft={peft}"))
    cfg = _cfg(tmp_path, ml100k_dir, f"peft={peft}", "model.gradient_checkpointing=true")
    assert build_datamodule_and_system(cfg)[1].model.backbone.is_activation_checkpointing
    checkpointed = _loss_and_grads(cfg)
    assert torch.allclose(plain[0], checkpointed[0], atol=1e-5)
    assert plain[1].keys() == checkpointed[1].keys() and len(plain[1]) > 2
    for name, grad in plain[1].items():
        assert torch.allclose(grad, checkpointed[1][name], atol=1e-5), name
    assert any(grad.abs().sum() > 0 for grad in plain[1].values())


def test_a_backbone_without_checkpointing_is_named(tmp_path: Path):
    from m6rec.models.speedups import enable_gradient_checkpointing

    with pytest.raises(ValueError, match="model.gradient_checkpointing=true: Linear"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2), True)


def test_compile_switch_compiles_the_task_model_in_place(tmp_path: Path, ml100k_dir: Path):
    _, system = build_datamodule_and_system(_cfg(tmp_path, ml100k_dir, "model.compile=true"))
    assert system.model._compiled_call_impl is not None
    assert not any("_orig_mod" in key for key in system.state_dict())  # checkpoints keep their keys
    _, plain = build_datamodule_and_system(_cfg(tmp_path, ml100k_dir))
    assert plain.model._compiled_call_impl is None


def test_lora_merged_copy_gives_the_same_outputs(tmp_path: Path, ml100k_dir: Path):
    datamodule, system = build_datamodule_and_system(_cfg(tmp_path, ml100k_dir))
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    base = "backbone.base_model.model.h.0.attn.c_attn.base_layer.weight"
    seed_weight = system.model.state_dict()[base].clone()
    with torch.no_grad():
        for name, param in system.model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op adapter): give the adapters something to merge
                param.normal_(0, 0.1)
    system.eval()
    trained = system.model
    merged = merged_copy(trained)
    with torch.no_grad():
        unmerged_out = system(batch)
        system.model = merged
        merged_out = system(batch)
    assert torch.allclose(merged_out, unmerged_out, atol=1e-5) and not torch.equal(merged_out, unmerged_out * 0)
    assert not torch.allclose(merged.state_dict()[base], seed_weight)  # the copy's base weights hold the adapters
    assert torch.equal(trained.state_dict()[base], seed_weight)  # the trained module is untouched


def test_training_without_validation_finishes(tmp_path: Path, ml100k_dir: Path):
    """limit_val_batches=0 without our checkpoint callback (as benchmarks/perf.py times training): Lightning's default
    checkpoint has a path but no score, which run.py must not report."""
    cfg = _cfg(
        tmp_path,
        ml100k_dir,
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "test=false",
        "+trainer.limit_val_batches=0",
        "~callbacks.early_stopping",
        "~callbacks.model_checkpoint",
    )
    metrics = run.train(cfg)
    assert "val/auc" not in metrics  # nothing validated: no best score is reported
    assert "best_checkpoint" not in metrics or Path(metrics["best_checkpoint"]).is_file()


def test_norm_clipping_under_fsdp_goes_through_the_wrapped_models_clip_grad_norm(tmp_path: Path, ml100k_dir: Path):
    """Lightning's FSDP precision plugin refuses norm clipping (seen on an H100): the system hands it to FSDP's own
    `clip_grad_norm_`; without such a wrapper, Lightning's own clipping still runs (the grads end at norm 0.5)."""
    from types import SimpleNamespace

    _, system = build_datamodule_and_system(_cfg(tmp_path, ml100k_dir))
    calls = []
    fsdp_like = SimpleNamespace(clip_grad_norm_=lambda value: calls.append(value))
    system._trainer = SimpleNamespace(strategy=SimpleNamespace(model=fsdp_like))
    system.configure_gradient_clipping(None, gradient_clip_val=0.7, gradient_clip_algorithm="norm")
    assert calls == [0.7]

    params = [p for p in system.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    system._trainer = None
    trainer = __import__("lightning").Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(system)
    system.trainer = trainer
    optimizer = torch.optim.SGD(params, lr=0.1)
    system.configure_gradient_clipping(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert calls == [0.7] and abs(float(norm) - 0.5) < 1e-4


@pytest.mark.slow  # a real fit of 4 steps through benchmarks/gpu.py (runs on CPU without a GPU)
def test_gpu_benchmark_counts_real_tokens_and_flops(tmp_path: Path, ml100k_dir: Path):
    import sys

    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu import measure

    record = measure(
        [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "experiment=ctr_lora", "data.batch_size=8"],
        steps=3,
        warmup=1,
        random_init=None,
    )
    assert record["steps_timed"] == 3 and record["device"] == "cpu"
    assert 0 < record["padding_fraction"] < 1 and record["tokens_per_s"] < record["padded_tokens_per_s"]
    assert record["flops_per_step"] > 6 * record["trainable_params"] * 8  # at least the trainable part's 6·N per token
