"""benchmarks/paired.py: paired differences over shared seeds, by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks.paired import compare, main, paired
from benchmarks.quality import read_records


def _record(model: str, seed: int, ndcg: float) -> dict:
    return {"protocol": "P1", "model": model, "seed": seed, "metrics": {"NDCG@10": ndcg}}


def test_paired_difference_mean_std_se_and_seeds_higher():
    # diffs 0.02, -0.01, 0.03: mean 0.04/3; deviations 0.02/3, -0.07/3, 0.05/3 → variance (4 + 49 + 25)/9e4/2
    out = paired([0.12, 0.11, 0.14], [0.10, 0.12, 0.11])
    assert out["mean"] == pytest.approx(0.04 / 3)
    assert out["std"] == pytest.approx((78 / 9e4 / 2) ** 0.5)
    assert out["se"] == pytest.approx(out["std"] / 3**0.5)
    assert out["higher"] == 2


def test_compare_keeps_the_shared_seeds_and_later_files_win(tmp_path):
    first = [_record("ref", s, v) for s, v in [(0, 0.10), (1, 0.12), (2, 0.11)]]
    first += [_record("lm", s, v) for s, v in [(0, 0.99), (1, 0.11)]]
    second = [_record("lm", 0, 0.12), _record("lm", 2, 0.14), _record("lm", 3, 0.5)]
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, records in zip(paths, [first, second], strict=True):
        path.write_text(json.dumps(records))
    result = compare(read_records(paths, "--records"), "P1", ["lm"], "ref", "NDCG@10")
    assert result["seeds"] == [0, 1, 2]  # seed 3 only has the LM row
    ref, lm = result["rows"]
    assert ref["model"] == "ref" and "versus" not in ref and ref["mean"] == pytest.approx(0.11)
    assert lm["values"] == [0.12, 0.11, 0.14]  # seed 0 from the second file
    assert lm["versus"]["mean"] == pytest.approx(0.04 / 3) and lm["versus"]["higher"] == 2
    one = compare(read_records(paths, "--records"), "P1", ["lm"], "ref", "NDCG@10", seeds=[1])
    assert one["rows"][1]["versus"] == {"mean": pytest.approx(-0.01), "std": 0.0, "se": 0.0, "higher": 0}


def test_compare_names_the_missing_seeds_and_metric(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_record("ref", 0, 0.1), _record("lm", 0, 0.2), _record("lm", 1, 0.2)]))
    with pytest.raises(SystemExit, match=r"P1: no records for ref seeds \[1\]"):
        main(["P1", "lm", "--versus", "ref", "--seeds", "0", "1", "--records", str(path)])
    with pytest.raises(SystemExit, match="P1 ref: its records have no AUC"):
        main(["P1", "lm", "--versus", "ref", "--metric", "AUC", "--records", str(path)])
    with pytest.raises(SystemExit, match="P1: no seed has records for all of ref, other"):
        main(["P1", "other", "--versus", "ref", "--records", str(path)])
    bad = tmp_path / "bad.json"
    bad.write_text("[{}]")
    with pytest.raises(SystemExit, match="bad.json: not a quality.py record file"):
        main(["P1", "lm", "--versus", "ref", "--records", str(bad)])
    out = tmp_path / "out.json"
    main(["P1", "lm", "--versus", "ref", "--records", str(path), "--out", str(out)])
    assert json.loads(out.read_text())["rows"][1]["versus"]["mean"] == pytest.approx(0.1)


def test_plot_writes_a_png_with_the_held_out_seeds_marked(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([_record(m, s, 0.1 + 0.01 * s * (m == "lm")) for m in ("ref", "lm") for s in range(4)]))
    out = tmp_path / "plots" / "paired.png"
    result = main(["P1", "lm", "--versus", "ref", "--records", str(path), "--plot", str(out), "--held-out-from", "2"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["rows"][1]["versus"]["mean"] == pytest.approx(0.015)  # diffs 0, .01, .02, .03
    assert list(out.parent.iterdir()) == [out]  # written atomically: no temporary file left
