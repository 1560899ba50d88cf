"""benchmarks/train_share.py: P2 rows grouped by their TRAIN share, and paired gaps at each share, by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks.train_share import main


def _record(model: str, seed: int, auc: float, protocol: str = "P2") -> dict:
    lm_based = model.startswith("lm")
    return {"protocol": protocol, "model": model, "lm_based": lm_based, "seed": seed, "metrics": {"AUC": auc}}


def test_rows_by_share_with_paired_gaps_to_the_reference(tmp_path):
    records = [_record("ref", s, v) for s, v in [(0, 0.70), (1, 0.72)]]  # P2 itself: share 80
    records += [_record("ref_train10", s, v) for s, v in [(0, 0.60), (1, 0.61), (2, 0.62)]]
    records += [_record("lm_train10", s, v) for s, v in [(0, 0.63), (1, 0.62), (2, 0.99)]]
    records += [_record("lm", 0, 0.71), _record("lm", 1, 0.74), _record("lm_train10", 5, 0.5, protocol="P1")]
    path, out = tmp_path / "r.json", tmp_path / "share.json"
    path.write_text(json.dumps(records))
    entries = main(["--records", str(path), "--versus", "ref", "--out", str(out)])
    got = {(e["model"], e["share"]): e for e in entries}
    assert set(got) == {("ref", 80), ("ref", 10), ("lm", 80), ("lm", 10)}  # the P1 record is not a P2 row
    assert got[("ref", 10)]["mean"] == pytest.approx(0.61) and "versus" not in got[("ref", 10)]
    assert [got[key]["lm_based"] for key in [("ref", 80), ("ref", 10), ("lm", 80), ("lm", 10)]] == [0, 0, 1, 1]
    # lm - ref at share 10, seeds 0-2: 0.03, 0.01, 0.37 → mean 0.41 / 3; at share 80, seeds 0-1: 0.01, 0.02
    assert got[("lm", 10)]["versus"]["mean"] == pytest.approx(0.41 / 3)
    assert got[("lm", 10)]["versus"]["higher"] == 3
    assert got[("lm", 80)]["versus"]["mean"] == pytest.approx(0.015)
    assert got[("lm", 80)]["versus"]["std"] == pytest.approx(0.005 * 2**0.5)
    assert json.loads(out.read_text()) == entries
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    only = main(["--records", str(path), "--models", "lm"])
    assert {(e["model"], e["share"]) for e in only} == {("lm", 80), ("lm", 10)}


def test_fixed_reads_the_fixed_test_rows_and_leaves_the_other_family_out(tmp_path):
    records = [_record("lm", 0, 0.74), _record("lm_train20", 0, 0.70), _record("lm_train20fixed", 0, 0.72)]
    records += [_record("lm_train20fixed", 1, 0.73)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    fixed = {(e["model"], e["share"]): e["mean"] for e in main(["--records", str(path), "--fixed"])}
    assert fixed == {("lm", 80): pytest.approx(0.74), ("lm", 20): pytest.approx(0.725)}
    moving = {(e["model"], e["share"]): e["mean"] for e in main(["--records", str(path)])}
    assert moving == {("lm", 80): pytest.approx(0.74), ("lm", 20): pytest.approx(0.70)}


def test_a_missing_reference_or_metric_is_one_clear_line(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_record("lr_train10", 0, 0.7)]))
    with pytest.raises(SystemExit, match=r"--versus nope: no such row in --records \(rows: lr\)"):
        main(["--records", str(path), "--versus", "nope"])
    with pytest.raises(SystemExit, match="--records: no P2 record with metric 'NDCG@10'"):
        main(["--records", str(path), "--metric", "NDCG@10"])
