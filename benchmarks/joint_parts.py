"""What each part of a joint CTR model (task.features: prompt model + feature model, logits added) scores alone.

    python benchmarks/joint_parts.py ctr_lora_deepfm ctr_lora_ids_deepfm --seeds 0 1 2

For each `benchmarks/quality.py` run (logs/quality/P2/<model>/default/seed<S>), rebuilds the run from its resolved
config, loads its best checkpoint and scores the test split three ways: the prompt model's logit alone, the feature
model's alone, and their sum (the model as trained and tested; it must reproduce the run's test AUC). Prints a table
(mean ± std over seeds) and writes benchmarks/results/joint_parts_P2.json. Nothing is chosen on these numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torchmetrics.functional.classification import binary_auroc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.build import build_datamodule_and_system  # noqa: E402
from m6rec.utils.resolvers import register_resolvers  # noqa: E402
from m6rec.utils.run_record import best_checkpoint  # noqa: E402

PARTS = ("prompt", "features", "sum")


@torch.no_grad()
def part_aucs(run: Path) -> dict[str, float]:
    """Test AUC of the prompt part, the feature part and their sum, for one finished joint run."""
    ckpt = best_checkpoint(run)
    if ckpt is None:
        raise SystemExit(f"{run}: no best checkpoint (metrics.json best_checkpoint); rerun quality.py first")
    cfg = OmegaConf.load(run / "config_resolved.yaml")
    metrics = json.loads((run / "metrics.json").read_text())
    datamodule, system = build_datamodule_and_system(cfg)
    if getattr(system, "features", None) is None:
        raise ValueError(f"{run}: not a joint model (its task has no `features`)")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    system.load_state_dict(state, strict=False)  # adapter-only checkpoints omit the frozen weights, built as saved
    datamodule.setup("test")
    system.eval()
    prompt, features, labels = [], [], []
    for batch in datamodule.test_dataloader():
        prompt.append(system.prompt_logits(batch))
        features.append(system.features(batch["user_ids"], batch["item_ids"]))
        labels.append(batch["labels"].long())
    scores = {"prompt": torch.cat(prompt), "features": torch.cat(features)}
    scores["sum"] = scores["prompt"] + scores["features"]
    label = torch.cat(labels)
    aucs = {part: float(binary_auroc(score, label)) for part, score in scores.items()}
    if abs(aucs["sum"] - metrics["test/auc"]) > 1e-4:
        raise ValueError(
            f"{run}: the rebuilt model scores AUC {aucs['sum']:.4f}, the run logged {metrics['test/auc']:.4f}"
        )
    return aucs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="quality.py P2 model names of joint runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--log-dir", type=Path, default=ROOT / "logs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "joint_parts_P2.json")
    args = parser.parse_args(argv)
    register_resolvers()
    rows = []
    print(f"{'model':<24} " + " ".join(f"{p + ' AUC':>20}" for p in PARTS))
    for model in args.models:
        runs = [part_aucs(args.log_dir / "quality" / "P2" / model / "default" / f"seed{s}") for s in args.seeds]
        row = {"model": model, "seeds": args.seeds, "per_seed": runs}
        for part in PARTS:
            values = [r[part] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            row[part] = {"mean": statistics.fmean(values), "std": std}
        rows.append(row)
        print(f"{model:<24} " + " ".join(f"{row[p]['mean']:>11.4f} ± {row[p]['std']:.4f}" for p in PARTS))
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
