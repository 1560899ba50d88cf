"""The field's protocols on a log with same-second interactions: loo tie rules through the loaders and DataModules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m6rec.data.behaviour_log import BehaviourLogDataModule
from m6rec.data.next_item import NextItemDataModule
from m6rec.data.render import render_history_item
from m6rec.data.splits import TEST, VALID
from tests.fixtures import make_log, write_grouplens, write_recbole


def tied_log(seed: int = 0) -> dict:
    """make_log with every user's last two interactions in the same second, rows shuffled (as u.data's are)."""
    log = make_log()
    rows = log["ratings"]
    last = {}
    for k, (u, _, _, t) in enumerate(rows):
        last.setdefault(u, []).append((t, k))
    for u, stamps in last.items():
        (_, k18), (_, k19) = sorted(stamps)[-2:]
        u, i, r, _ = rows[k19]
        rows[k19] = (u, i, r, rows[k18][3])  # the newest moves back onto the second newest's second
    order = np.random.default_rng(seed).permutation(len(rows))
    return {**log, "ratings": [rows[k] for k in order]}


@pytest.fixture(scope="module")
def tied() -> dict:
    return tied_log()


@pytest.fixture(scope="module", params=["grouplens", "recbole"])
def tied_dir(request, tmp_path_factory, tied: dict) -> Path:
    write = write_grouplens if request.param == "grouplens" else write_recbole
    return write(tmp_path_factory.mktemp(f"tied-{request.param}"), tied)


def _datamodule(root: Path, tmp_path: Path, **settings) -> BehaviourLogDataModule:
    return BehaviourLogDataModule(data_dir=str(tmp_path), root=str(root), split="loo", **settings)


def _last_two(log: dict) -> dict[int, tuple[int, int]]:
    """Per user, the items of the two same-second interactions in file order (earlier row, later row)."""
    newest = {}
    for u, _, _, t in log["ratings"]:
        newest[u] = max(newest.get(u, 0), t)
    pairs: dict[int, list[int]] = {}
    for u, i, _, t in log["ratings"]:
        if t == newest[u]:
            pairs.setdefault(u, []).append(i)
    assert all(len(p) == 2 for p in pairs.values())
    return {u: (p[0], p[1]) for u, p in pairs.items()}


def _held_out(dm: BehaviourLogDataModule) -> dict[int, tuple[int, int]]:
    """Per user, (validation item, test item) under the DataModule's split."""
    inter, codes = dm.interactions, dm.split_codes()
    valid = dict(zip(inter["user_id"][codes == VALID], inter["item_id"][codes == VALID], strict=True))
    test = dict(zip(inter["user_id"][codes == TEST], inter["item_id"][codes == TEST], strict=True))
    return {u: (valid[u], test[u]) for u in test}


def test_rows_reach_the_splitter_in_file_order(tied_dir: Path, tied: dict, tmp_path: Path):
    inter = _datamodule(tied_dir, tmp_path).interactions
    expected = np.array([(u, i, t) for u, i, _, t in tied["ratings"]])
    np.testing.assert_array_equal(inter[["user_id", "item_id", "timestamp"]].to_numpy(), expected)


def test_loo_tie_rules_through_the_datamodule(tied_dir: Path, tied: dict, tmp_path: Path):
    pairs = _last_two(tied)
    assert _held_out(_datamodule(tied_dir, tmp_path)) == pairs  # default `row`: the later row is the test item
    by_item = {u: (min(p), max(p)) for u, p in pairs.items()}
    assert _held_out(_datamodule(tied_dir, tmp_path, tie_break="item")) == by_item
    drawn = [_held_out(_datamodule(tied_dir, tmp_path, tie_break="random", split_seed=s)) for s in (0, 1)]
    for held_out in drawn:
        assert all(set(held_out[u]) == set(p) for u, p in pairs.items())  # only the tied pair swaps roles
    assert drawn[0] != drawn[1]
    assert drawn[0] == _held_out(_datamodule(tied_dir, tmp_path, tie_break="random", split_seed=0))


def test_tie_rule_is_part_of_the_data_fingerprint(ml100k_dir: Path, tmp_path: Path):
    prints = {rule: _datamodule(ml100k_dir, tmp_path, tie_break=rule).fingerprint for rule in ("row", "item")}
    assert prints["row"] != prints["item"]


def test_unknown_tie_rule_names_the_config_key(ml100k_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"^data\.tie_break: unknown rule 'newest'"):
        _datamodule(ml100k_dir, tmp_path, tie_break="newest").split_codes()


# ---------------------------------------------------------------- what each stage's history holds
def _in_history(dm: BehaviourLogDataModule, item: int, text: str) -> bool:
    """Whether `item` is rendered as a history piece ("Title (r/5)", whatever r) in `text`."""
    row = dm.tables.items.set_index("item_id").loc[item].to_dict()
    return any(render_history_item(row, r, dm.templates) in text for r in range(1, 6))


def test_ctr_loo_test_prompt_holds_the_validation_item_never_the_test_item(tied_dir: Path, tmp_path: Path):
    dm = _datamodule(tied_dir, tmp_path, max_length=512, cache=False)
    dm.setup()
    held_out = _held_out(dm)
    for name in ("valid", "test"):
        data = dm.datasets[name]
        assert len(data) == len(held_out) == 16
        for user, ids in zip(data.user_ids.tolist(), data.input_ids, strict=True):
            valid, test = held_out[user]
            text = dm.tokenizer.decode(ids)
            assert not _in_history(dm, test, text)
            assert _in_history(dm, valid, text) == (name == "test"), (name, text)
            assert text.split(" rated ")[1].split(". Will ")[0].count("/5)") == 10  # history_len, none dropped
    train = dm.datasets["train"]
    for user, ids in zip(train.user_ids.tolist(), train.input_ids, strict=True):
        assert not any(_in_history(dm, item, dm.tokenizer.decode(ids)) for item in held_out[user])


def test_retrieval_test_query_holds_the_same_second_validation_item(tied_dir: Path, tmp_path: Path):
    dm = NextItemDataModule(data_dir=str(tmp_path), root=str(tied_dir), max_length=512)
    dm.setup()
    held_out = _held_out(dm)
    for name in ("valid", "test"):
        for user, text in zip(dm.datasets[name].user_ids.tolist(), dm.query_texts(name), strict=True):
            valid, test = held_out[user]
            assert not _in_history(dm, test, text) and _in_history(dm, valid, text) == (name == "test")
    for user, text in zip(dm.datasets["train"].user_ids.tolist(), dm.query_texts("train"), strict=True):
        assert not any(_in_history(dm, item, text) for item in held_out[user])


def test_recommender_history_holds_every_interaction(tied_dir: Path, tmp_path: Path):
    """A request follows all the user knows (the test item too); `before` rebuilds an evaluation point."""
    ctr = _datamodule(tied_dir, tmp_path, max_length=512, cache=False)
    retrieval = NextItemDataModule(data_dir=str(tmp_path), root=str(tied_dir), max_length=512)
    for user, (valid, test) in list(_held_out(ctr).items())[:4]:
        (request,) = ctr.request_columns(user, [valid])["input_ids"]
        (at_test,) = ctr.request_columns(user, [valid], before=TEST)["input_ids"]
        query, query_at_test = retrieval.encode_query(user), retrieval.encode_query(user, before=TEST)
        for ids in (request, query):
            text = ctr.tokenizer.decode(ids)
            assert _in_history(ctr, test, text) and _in_history(ctr, valid, text)
        for ids in (at_test, query_at_test):
            text = ctr.tokenizer.decode(ids)
            assert not _in_history(ctr, test, text) and _in_history(ctr, valid, text)
