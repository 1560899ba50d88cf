"""Training throughput on an accelerator: tokens/s, peak memory and model-FLOPs utilisation of one configuration.

    python benchmarks/gpu.py experiment=ctr_lora model=smollm2_135m trainer=gpu            # Hydra overrides
    python benchmarks/gpu.py --steps 300 --random-init data/models/smollm2-135m experiment=ctr_lora ...
    python benchmarks/gpu.py --name tiny experiment=ctr_lora trainer=gpu --out gpu.json   # appends one record

Builds the DataModule and system exactly as run.py does (m6rec.build), then fits `--steps` training steps with the
config's Trainer (its precision and strategy; no validation, logging or checkpoints) and times the steps after
`--warmup`. tokens/s counts real (unpadded) prompt tokens; FLOPs per step are counted by torch's FlopCounterMode on
one forward + backward (what LoRA really computes: no weight gradients for frozen layers), MFU = achieved FLOP/s over
the device's bf16 dense peak (measured here on an 8192³ bf16 matmul, and the spec sheet's where known).
`--random-init FOLDER` builds the folder's architecture (config.json) with random weights and its tokenizer: the same
speed as the pretrained weights, for machines the weights cannot be carried to. Test metrics of such a run are
meaningless and not reported. Writes one record per call to `--out` (a JSON list, appended).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEC_BF16_DENSE = {"H100 80GB HBM3": 989e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}  # FLOP/s, no sparsity


class StepMeter:
    """A Lightning callback timing training steps after `warmup` and counting their real and padded tokens."""

    def __new__(cls, warmup: int):
        import lightning as L

        class _Meter(L.Callback):
            def __init__(self) -> None:
                self.start = self.end = 0.0
                self.steps = self.tokens = self.padded = 0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == warmup:
                    _sync()
                    self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step > warmup:
                    self.steps += 1
                    self.tokens += int(batch["attention_mask"].sum())
                    self.padded += batch["attention_mask"].numel()

            def on_train_end(self, trainer, pl_module):
                _sync()
                self.end = time.perf_counter()

        return _Meter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measured_bf16_peak(n: int = 8192, repeats: int = 10) -> float | None:
    """FLOP/s of an n³ bf16 matmul on the GPU (after warm-up); None without CUDA."""
    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def random_init_overrides(cfg, folder: Path) -> None:
    """Point `cfg.model` at `folder`'s architecture with random weights and at its tokenizer."""
    from omegaconf import open_dict

    config = json.loads((folder / "config.json").read_text())
    dropped = ("architectures", "quantization_config", "dtype", "transformers_version", "vocab_size", "use_cache")
    keep = {k: v for k, v in config.items() if not k.startswith("_") and k not in dropped}
    with open_dict(cfg):
        cfg.model.backbone.path = None
        cfg.model.backbone.config = keep
        cfg.model.tokenizer = str(folder)
        cfg.data.tokenizer = str(folder)


def step_flops(system, batch: dict) -> int:
    """FLOPs of one forward + backward of `system.loss` on `batch` (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        system.loss(batch).backward()
    system.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(overrides: list[str], steps: int, warmup: int, random_init: Path | None) -> dict[str, Any]:
    """Fit `steps` steps of the composed config and return the throughput record."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from m6rec.build import build_datamodule_and_system
    from tests.helpers import compose_config

    cfg = compose_config([*overrides, "~logger"], Path(tempfile.mkdtemp()))
    if random_init is not None:
        random_init_overrides(cfg, random_init)
    datamodule, system = build_datamodule_and_system(cfg)
    meter = StepMeter(warmup)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.update(
        max_steps=steps + warmup,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[meter],
        enable_model_summary=False,
        val_check_interval=None,
        check_val_every_n_epoch=None,
    )
    trainer: L.Trainer = instantiate(trainer_cfg, _convert_="all")
    datamodule.setup("fit")
    flops = step_flops(system, next(iter(datamodule.train_dataloader())))  # on the CPU, before any wrapping
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(system, datamodule=datamodule)
    elapsed = meter.end - meter.start
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = measured_bf16_peak()
    achieved = flops * meter.steps / elapsed if elapsed > 0 else 0.0
    spec = next((v for k, v in SPEC_BF16_DENSE.items() if k in device), None)
    n_params = sum(p.numel() for p in system.parameters())
    n_trainable = sum(p.numel() for p in system.parameters() if p.requires_grad)
    return {
        "overrides": overrides,
        "random_init": str(random_init) if random_init else None,
        "device": device,
        "torch": torch.__version__,
        "precision": str(cfg.trainer.get("precision")),
        "strategy": str(cfg.trainer.get("strategy")),
        "batch_size": int(cfg.data.batch_size),
        "steps_timed": meter.steps,
        "seconds": elapsed,
        "steps_per_s": meter.steps / elapsed,
        "tokens_per_s": meter.tokens / elapsed,
        "padded_tokens_per_s": meter.padded / elapsed,
        "padding_fraction": 1 - meter.tokens / max(meter.padded, 1),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "params": n_params,
        "trainable_params": n_trainable,
        "flops_per_step": flops,
        "achieved_tflops": achieved / 1e12,
        "measured_bf16_peak_tflops": peak / 1e12 if peak else None,
        "mfu_vs_measured_peak": achieved / peak if peak else None,
        "mfu_vs_spec_peak": achieved / spec if spec else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (kernels, allocator, compile)")
    parser.add_argument("--random-init", type=Path, default=None, help="an HF folder: its architecture, random weights")
    parser.add_argument("--name", default=None, help="a label for the record")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=ctr_lora trainer=gpu")
    args = parser.parse_args()
    record = {"name": args.name, **measure(args.overrides, args.steps, args.warmup, args.random_init)}
    records = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([*records, record], indent=2) + "\n")
    print("| measure | value |\n|---|---|")
    for key in (
        "name",
        "device",
        "precision",
        "strategy",
        "batch_size",
        "steps_per_s",
        "tokens_per_s",
        "padding_fraction",
        "peak_memory_gib",
        "achieved_tflops",
        "mfu_vs_measured_peak",
        "mfu_vs_spec_peak",
    ):
        value = record[key]
        print(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
