"""An independent check of the P2 logistic regression: scikit-learn's L2 LogisticRegression on the same one-hot /
multi-hot feature ids and split (m6rec.data.datamodules.features), test AUC / LogLoss per C chosen on validation AUC.

    python benchmarks/sklearn_lr_p2.py                 # split_seed 0 (the P2 split), C in {0.03, 0.1, 0.3, 1, 3}
    python benchmarks/sklearn_lr_p2.py --split-seed 1 --C 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule  # noqa: E402
from m6rec.data.datamodules.features import FeatureDataModule  # noqa: E402


def one_hot(dm: FeatureDataModule, split: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """The split's rows as a sparse 0/1 matrix over the feature ids (the empty-slot id 0 dropped), and labels."""
    columns = dm.datasets[split].columns
    ids = columns["features"].numpy()
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    keep = ids.ravel() != 0
    matrix = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], ids.ravel()[keep])), shape=(len(ids), dm.num_features))
    return matrix, columns["labels"].numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--C", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0, 3.0])
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    args = p.parse_args()
    behaviour = BehaviourLogDataModule(data_dir=args.data_dir, split_seed=args.split_seed, cache=False)
    dm = FeatureDataModule(behaviour)
    dm.setup()
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (one_hot(dm, s) for s in ("train", "valid", "test"))
    for c in args.C:
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        valid, test = model.predict_proba(x_valid)[:, 1], model.predict_proba(x_test)[:, 1]
        print(
            f"C={c:g}  val AUC {roc_auc_score(y_valid, valid):.4f}  test AUC {roc_auc_score(y_test, test):.4f}  "
            f"test LogLoss {log_loss(y_test, test):.4f}"
        )


if __name__ == "__main__":
    main()
