"""The zero-training LM content model (P3): cosine between item encodings and the history's mean, centred on the
TRAIN items' mean only, checked by hand; experiment=p3_content_minilm builds and fits on the fixture's cold split."""

from __future__ import annotations

import pytest
import torch

from m6rec.build import build_datamodule_and_system
from m6rec.models.text_content import TextContent
from tests.helpers import compose_config
from tests.test_text_item_embedding import tiny_encoder  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
# padding row, then items 1..4: 2-d encodings chosen so the centred cosines are easy to compute by hand
ENCODINGS = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0], [1.0, 3.0], [9.0, 9.0]])


def test_scores_by_hand_centred_on_train_items_only():
    model = TextContent(ENCODINGS)
    model.fit(users=torch.tensor([0, 0, 1]), items=torch.tensor([2, 3, 2]))  # TRAIN items 2 and 3: mean (2, 2)
    torch.testing.assert_close(model.mean, torch.tensor([2.0, 2.0]))  # item 4 (held out) does not move it
    s = 2**-0.5
    expected_items = torch.tensor([[-s, -s], [s, -s], [-s, s], [s, s]])  # (-1,-1), (1,-1), (-1,1), (7,7) normalised
    torch.testing.assert_close(model.item_vectors(), expected_items)
    history = torch.tensor([[0, 2], [2, 3], [0, 4]])  # left-padded; user 2's history is item 4 alone
    queries = model.query_vectors({"history": history})
    torch.testing.assert_close(queries[0], expected_items[1])  # one item: its own direction
    assert queries[1].abs().max() < 1e-6  # items 2 and 3 cancel out: no preference (zero, not NaN)
    torch.testing.assert_close(queries[2], expected_items[3])
    scores = queries @ model.item_vectors().T
    torch.testing.assert_close(scores[0], torch.tensor([0.0, 1.0, -1.0, 0.0]))  # cosines to (s, -s)


def test_without_centre_is_the_plain_cosine():
    model = TextContent(ENCODINGS, centre=False)
    model.fit(users=torch.tensor([0]), items=torch.tensor([2]))
    assert torch.equal(model.mean, torch.zeros(2))
    torch.testing.assert_close(model.item_vectors()[0], torch.tensor([2**-0.5, 2**-0.5]))


def test_bad_encodings_name_the_shape():
    with pytest.raises(ValueError, match=r"\[1 \+ num_items, width\], got \(1, 2\)"):
        TextContent(torch.zeros(1, 2))


def test_p3_content_minilm_experiment_fits_on_train_items(tiny_encoder, ml100k_dir, tmp_path):  # noqa: F811
    overrides = [
        "experiment=p3_content_minilm",
        f"data.root={ml100k_dir}",
        f"paths.data_dir={tmp_path / 'cache'}",
        f"model.encoder={tiny_encoder}",
    ]
    datamodule, system = build_datamodule_and_system(compose_config(overrides, tmp_path))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = system.model
    assert isinstance(model, TextContent) and not system.trains  # nothing to train
    users, items = datamodule.train_pairs()
    model.fit(users, items)
    held_out = set(datamodule.ranking_items("val")) | set(datamodule.ranking_items("test"))
    assert held_out and not held_out & set(items.tolist())  # the cold items are not TRAIN items...
    torch.testing.assert_close(model.mean, model.encodings[torch.unique(items)].mean(0))  # ...so not in the centre
    norms = model.item_vectors().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
