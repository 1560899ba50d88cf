"""How `data.tie_break` changes the `loo` test items of a MovieLens log: users whose last two interactions share a
second, the median popularity (ratings in the whole log) of the test items under each rule, and what the
popularity recommender (training counts, seen items masked, full catalogue) scores on them.

    python benchmarks/loo_ties.py [--root data/ml-100k]   (a GroupLens u.* or RecBole ml-100k.* folder; default: fetch)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.data.behaviour_log import BehaviourLogDataModule  # noqa: E402
from m6rec.data.splits import TEST, TIE_BREAKS, TRAIN  # noqa: E402
from m6rec.metrics.ranking import ranking_values, target_ranks  # noqa: E402


def popularity_ranks(inter, codes: np.ndarray) -> torch.Tensor:
    """Rank of each test item when items are scored by their TRAIN count, the user's TRAIN + VALID items masked."""
    items, column = np.unique(inter["item_id"].to_numpy(), return_inverse=True)
    counts = np.bincount(column[codes == TRAIN], minlength=len(items)).astype(np.float64)
    test = np.flatnonzero(codes == TEST)
    users = inter["user_id"].to_numpy()
    seen = [column[(users == users[r]) & (codes < TEST)] for r in test]
    excluded = torch.full((len(test), max(map(len, seen))), -1)
    for row, cols in enumerate(seen):
        excluded[row, : len(cols)] = torch.from_numpy(cols)
    queries = torch.ones(len(test), 1, dtype=torch.float64)
    return target_ranks(queries, torch.from_numpy(counts)[:, None], torch.from_numpy(column[test]), excluded)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="dataset folder (default: fetch into --data-dir)")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args(argv)
    inter = BehaviourLogDataModule(data_dir=args.data_dir, root=args.root).interactions
    popularity = inter["item_id"].map(inter["item_id"].value_counts()).to_numpy()
    last_two = inter.sort_values(["user_id", "timestamp"]).groupby("user_id")["timestamp"].apply(lambda t: t.iloc[-2:])
    tied = last_two.groupby(level=0).nunique() == 1
    tied_users = set(tied.index[tied].tolist())
    result = {"users": int(inter["user_id"].nunique()), "users_tied_at_last_two": len(tied_users)}
    for rule in TIE_BREAKS:
        dm = BehaviourLogDataModule(data_dir=args.data_dir, root=args.root, split="loo", tie_break=rule)
        test = dm.split_codes() == TEST
        on_tied = test & inter["user_id"].isin(tied_users).to_numpy()
        result[f"median_test_popularity_{rule}"] = float(np.median(popularity[test]))
        result[f"median_test_popularity_{rule}_tied_users"] = float(np.median(popularity[on_tied]))
        values = ranking_values(popularity_ranks(inter, dm.split_codes()), (10,))
        result.update({f"pop_{name}_{rule}": round(float(values[name]), 4) for name in ("hr@10", "ndcg@10")})
    for key, value in result.items():
        print(f"{key}: {value:g}")
    return result


if __name__ == "__main__":
    main()
