"""`python -m m6rec.recommend`: rebuilds a run, scores with the evaluation path, masks seen items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m6rec import recommend as rec
from m6rec.data.protocol.splits import TEST
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, ml100k_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("rec")
    run_cli(
        [
            "experiment=ctr_lora",
            "logger=csv",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp / 'cache'}",
            "data.split=loo",
            "trainer.max_epochs=1",
            "data.batch_size=32",
        ],
        tmp,
    )
    (run_dir,) = tmp.glob("logs/ctr_lora/runs/*")
    return run_dir


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory, ml100k_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("rec_retrieval")
    run_cli(
        [
            "experiment=retrieval_lora",
            "logger=csv",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp / 'cache'}",
            "trainer.max_epochs=1",
            "data.batch_size=32",
        ],
        tmp,
    )
    (run_dir,) = tmp.glob("logs/retrieval_lora/runs/*")
    return run_dir


def test_request_prompt_and_score_equal_the_test_events(trained_run: Path):
    """Under `loo` a test event follows all of the user's training and validation events, so its evaluation prompt
    and score must be exactly what the recommender computes for that (user, item) at that point (`before=TEST`)."""
    _, datamodule, system = rec.load_run(trained_run)
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    for row in range(3):
        user, item = int(test.user_ids[row]), int(test.item_ids[row])
        (ids,) = datamodule.request_columns(user, [item], before=TEST)["input_ids"]
        np.testing.assert_array_equal(ids, test.input_ids[row])
        batch = next(iter(torch.utils.data.DataLoader([test[row]], collate_fn=datamodule.collate_fn())))
        with torch.inference_mode():
            expected = system(batch)
        assert rec.score_items(datamodule, system, user, [item], before=TEST).item() == expected.item()


def test_a_run_saved_before_task_configs_named_their_model_part_still_loads(trained_run: Path, tmp_path: Path):
    """Older config_resolved.yaml files have no `task.backbone`: the recommender takes `model.backbone` for it."""
    import shutil

    from omegaconf import OmegaConf

    old_run = shutil.copytree(trained_run, tmp_path / "run")
    cfg = OmegaConf.load(old_run / "config_resolved.yaml")
    del cfg.task["backbone"]
    OmegaConf.save(cfg, old_run / "config_resolved.yaml")
    ckpt = next((trained_run / "checkpoints").glob("*.ckpt"))
    (_, dm, old), (_, _, new) = rec.load_run(old_run, ckpt), rec.load_run(trained_run, ckpt)
    assert rec.recommend(dm, old, 3, k=5) == rec.recommend(dm, new, 3, k=5)


def test_recommend_masks_every_seen_item_and_sorts_by_score(trained_run: Path):
    _, datamodule, system = rec.load_run(trained_run)
    inter = datamodule.interactions
    seen = set(inter.loc[(inter["user_id"] == 3).to_numpy(), "item_id"])  # every split
    ranked = rec.recommend(datamodule, system, 3, k=50)
    assert len(ranked) == 30 - len(seen) == 10  # the fixture's catalogue has 30 items, user 3 rated 20
    assert not seen & {item for item, _, _ in ranked}
    scores = [s for _, _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    with_seen = rec.recommend(datamodule, system, 3, k=50, include_seen=True)
    assert len(with_seen) == 30


def test_cli_prints_top_k_and_names_bad_candidates(trained_run: Path, tmp_path: Path, capsys):
    good = tmp_path / "candidates.txt"
    good.write_text("# two films\n2\n4\n")
    assert rec.main(["--run", str(trained_run), "--user", "1", "--k", "5", "--candidates", str(good)]) == 0
    out = capsys.readouterr().out
    assert "Heat" in out and "Fargo" in out and "Toy Story" not in out
    bad = tmp_path / "bad.txt"
    bad.write_text("2\n999\n")
    assert rec.main(["--run", str(trained_run), "--user", "1", "--candidates", str(bad)]) == 2
    assert f"{bad}:2: unknown item id 999" in capsys.readouterr().err
    assert rec.main(["--run", str(tmp_path), "--user", "1"]) == 2


def test_a_run_that_neither_scores_prompts_nor_embeds_is_a_clear_error(tmp_path: Path, ml100k_dir: Path):
    from omegaconf import OmegaConf

    from tests.helpers import compose_config

    cfg = compose_config(
        ["experiment=zero_shot", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}"], tmp_path
    )
    (tmp_path / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(rec.RecommendError, match=r"a ZeroShotSystem run \(task_name=zero_shot\); the recommender"):
        rec.load_run(tmp_path)


def test_retrieval_query_and_similarity_equal_the_evaluation_path(retrieval_run: Path):
    """Under `loo` a test query holds all of the user's training and validation events, so the recommender's query
    at that point (`before=TEST`), its similarity with the target and the target's rank among the non-excluded
    catalogue must equal evaluation's."""
    _, datamodule, system = rec.load_run(retrieval_run)
    queries = {user: datamodule.encode_query(user, before=TEST) for user in (1, 2, 3)}
    assert not datamodule.datasets  # encode_query did not need setup()
    datamodule.setup("test")
    system.embed_catalogue(datamodule)
    test, catalogue = datamodule.datasets["test"], datamodule.catalogue_ids.tolist()
    collate = datamodule.collate_fn()
    for row in range(3):
        user, item = int(test.user_ids[row]), int(test.item_ids[row])
        np.testing.assert_array_equal(queries[user], test.input_ids[row])
        batch = collate([test[row]])
        with torch.inference_mode():
            query = system(batch)
            expected = (query @ system.item_embeddings.T)[0]
            rank = int(system.rank(query, batch)[0])
        scores = rec.score_items(datamodule, system, user, catalogue, datamodule.hparams.eval_batch_size, before=TEST)
        column = catalogue.index(item)
        assert scores[column].item() == expected[column].item()
        others = [c for c, i in enumerate(catalogue) if i != item and i not in set(test.excluded[row].tolist())]
        assert rank == int((scores[others] >= scores[column]).sum())


def test_retrieval_recommend_masks_every_seen_item_and_sorts_by_similarity(retrieval_run: Path):
    _, datamodule, system = rec.load_run(retrieval_run)
    inter = datamodule.interactions
    seen = set(inter.loc[(inter["user_id"] == 3).to_numpy(), "item_id"])  # train, valid and test
    ranked = rec.recommend(datamodule, system, 3, k=50)
    assert len(ranked) == 30 - len(seen) and len(seen) == 20
    assert not seen & {item for item, _, _ in ranked}
    scores = [s for _, _, s in ranked]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    assert len(set(scores)) > 1  # the towers tell items apart
    assert rec.recommend(datamodule, system, 3, k=4) == ranked[:4]
    assert len(rec.recommend(datamodule, system, 3, k=50, include_seen=True)) == 30


def test_cli_prints_top_k_for_a_retrieval_run(retrieval_run: Path, capsys):
    _, datamodule, system = rec.load_run(retrieval_run)
    top = rec.recommend(datamodule, system, 2, k=3)
    assert rec.main(["--run", str(retrieval_run), "--user", "2", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "Top 3 for user 2" in out
    for _, title, score in top:
        assert title in out and f"{score:.4f}" in out
