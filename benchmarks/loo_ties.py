"""How `data.tie_break` changes the `loo` test items of a MovieLens log: users whose last two interactions share a
second, and the median popularity (ratings in the whole log) of the test items under each rule.

    python benchmarks/loo_ties.py [--root data/ml-100k]   (a GroupLens u.* or RecBole ml-100k.* folder; default: fetch)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.data.behaviour_log import BehaviourLogDataModule  # noqa: E402
from m6rec.data.splits import TEST, TIE_BREAKS  # noqa: E402


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
    for key, value in result.items():
        print(f"{key}: {value:g}")
    return result


if __name__ == "__main__":
    main()
