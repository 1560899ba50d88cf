"""`python -m m6rec.recommend`: rebuilds a run, scores with the evaluation path, masks seen items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m6rec import recommend as rec
from m6rec.data.splits import TRAIN
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, ml100k_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("rec")
    run_cli(["experiment=ctr_lora", "logger=csv", f"data.root={ml100k_dir}", f"paths.data_dir={tmp / 'cache'}",
             "data.split=loo", "trainer.max_epochs=1", "data.batch_size=32"], tmp)  # fmt: skip
    (run_dir,) = tmp.glob("logs/ctr_lora/runs/*")
    return run_dir


def test_request_prompt_and_score_equal_the_test_events(trained_run: Path):
    """Under `loo` a test event follows all of the user's training events, so its evaluation prompt and score must
    be exactly what the recommender computes for that (user, item)."""
    _, datamodule, system = rec.load_run(trained_run)
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    for row in range(3):
        user, item = int(test.user_ids[row]), int(test.item_ids[row])
        (ids,) = datamodule.encode_requests(user, [item])
        np.testing.assert_array_equal(ids, test.input_ids[row])
        batch = next(iter(torch.utils.data.DataLoader([test[row]], collate_fn=rec.pad_collate(0))))
        with torch.inference_mode():
            expected = system(batch)
        assert rec.score_items(datamodule, system, user, [item]).item() == expected.item()


def test_recommend_masks_training_items_and_sorts_by_score(trained_run: Path):
    _, datamodule, system = rec.load_run(trained_run)
    inter = datamodule.interactions
    seen = set(inter.loc[(datamodule.split_codes() == TRAIN) & (inter["user_id"] == 3).to_numpy(), "item_id"])
    ranked = rec.recommend(datamodule, system, 3, k=50)
    assert len(ranked) == 30 - len(seen)  # the fixture's catalogue has 30 items
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


def test_a_run_that_does_not_score_prompts_is_a_clear_error(tmp_path: Path, ml100k_dir: Path):
    from omegaconf import OmegaConf

    from tests.helpers import compose_config

    cfg = compose_config(["experiment=retrieval_lora", f"data.root={ml100k_dir}",
                          f"paths.data_dir={tmp_path / 'cache'}"], tmp_path)  # fmt: skip
    (tmp_path / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(rec.RecommendError, match="a RetrievalSystem run; the recommender ranks with runs that score"):
        rec.load_run(tmp_path)
