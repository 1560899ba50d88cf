"""The independent P1 reference: RecBole 1.2.1 on ML-100K, leave-one-out by time, full ranking (docs/baselines.md).
Runs in its own virtual environment (RecBole pins old packages; never install it into m6rec's):

    python -m venv /tmp/recbole_venv && /tmp/recbole_venv/bin/pip install recbole==1.2.1 torch
    /tmp/recbole_venv/bin/python benchmarks/recbole_ref.py BPR --seed 0      # also Pop, SASRec

Prints `RESULT {json}` with the test metrics of the best-validation epoch (NDCG@10 chosen, stopping_step 10).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    from recbole.quick_start import run_recbole  # the reference venv's package, not m6rec's dependency

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--data-path", default=None, help="folder holding ml-100k/ atomic files (default: RecBole's)")
    args = p.parse_args()
    config = {
        "dataset": "ml-100k",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": args.epochs,
        "stopping_step": 10,
        "seed": args.seed,
        "show_progress": False,
        "device": "cpu",
        "use_gpu": False,
        "train_batch_size": 256,
        "eval_batch_size": 4096,
        "log_wandb": False,
        "worker": 0,
    }
    if args.data_path:
        config["data_path"] = args.data_path
    if args.model == "SASRec":
        config.update({"train_neg_sample_args": None, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50})
    start = time.time()
    result = run_recbole(model=args.model, config_dict=config, saved=False)
    print(
        "RESULT",
        json.dumps(
            {
                "model": args.model,
                "seed": args.seed,
                "test": {k: float(v) for k, v in result["test_result"].items()},
                "valid": {k: float(v) for k, v in result["best_valid_result"].items()},
                "wall_s": time.time() - start,
            }
        ),
    )


if __name__ == "__main__":
    main()
