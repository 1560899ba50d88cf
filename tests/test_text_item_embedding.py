"""Cached LM text encodings (bit-exact round trip, keyed by text + encoder) and the text / hybrid item embeddings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast

from m6rec.models.text_encodings import cached_text_encodings, encode_texts
from m6rec.models.text_item_embedding import (
    HybridItemEmbedding,
    TextInitIDEmbedding,
    TextItemEmbedding,
    catalogue_encodings,
    principal_components,
)

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = [
    "toy",
    "story",
    "heat",
    "fargo",
    "comedy",
    "crime",
    "drama",
    "thriller",
    "(",
    ")",
    ",",
    "1995",
    "1996",
    "movie",
    *"0123456789",
    *(f"##{d}" for d in range(10)),
    "action",
    "adventure",
    "animation",
    "western",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A random 1-layer, 16-d BERT with a small WordPiece vocabulary (the fixture's words), saved as an HF folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


TEXTS = ["Toy Story (1995), comedy", "Heat (1995), crime, thriller", "Fargo (1996), crime, drama, thriller"]


def test_cached_encodings_round_trip_bit_exact_and_key_on_text(tiny_encoder: Path, tmp_path: Path):
    first = cached_text_encodings(TEXTS, str(tiny_encoder), tmp_path)
    files = sorted((tmp_path / "text_encodings").glob("*.safetensors"))
    assert len(files) == 1 and first.shape == (3, 16) and first.dtype == torch.float32
    assert torch.equal(load_file(files[0])["encodings"], first)  # what is on disk is exactly what was returned
    assert torch.equal(cached_text_encodings(TEXTS, str(tiny_encoder), tmp_path), first)  # read back, bit-exact
    assert torch.equal(encode_texts(TEXTS, str(tiny_encoder)), first)
    changed = cached_text_encodings([*TEXTS[:2], "Fargo (1996), crime"], str(tiny_encoder), tmp_path)
    assert len(list((tmp_path / "text_encodings").glob("*.safetensors"))) == 2  # a changed text is a new file
    torch.testing.assert_close(changed[:2], first[:2], rtol=0, atol=1e-5)  # (padded to another length)
    assert not torch.allclose(changed[2], first[2], atol=1e-3)
    cached_text_encodings(TEXTS, str(tiny_encoder), tmp_path, normalize=False)
    assert len(list((tmp_path / "text_encodings").glob("*.safetensors"))) == 3  # so is another setting


def test_encodings_are_unit_mean_pooled_and_ignore_padding(tiny_encoder: Path):
    alone = encode_texts(TEXTS[:1], str(tiny_encoder), normalize=False)
    beside_longer = encode_texts(TEXTS, str(tiny_encoder), normalize=False)[:1]  # padded to the longest text
    torch.testing.assert_close(beside_longer, alone, rtol=0, atol=1e-5)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_encoder)
    batch = tokenizer(TEXTS[:1], return_tensors="pt")
    hidden = BertModel.from_pretrained(tiny_encoder).eval()(**batch).last_hidden_state
    torch.testing.assert_close(alone, hidden.mean(1), rtol=0, atol=1e-5)  # the plain mean over its tokens
    unit = encode_texts(TEXTS, str(tiny_encoder))
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(3), rtol=0, atol=1e-6)


def test_empty_text_list_is_a_clear_error(tiny_encoder: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="no texts"):
        cached_text_encodings([], str(tiny_encoder), tmp_path)


def test_catalogue_encodings_render_each_item_and_pad_row_zero(tiny_encoder: Path, tmp_path: Path):
    items = pd.DataFrame(
        {"title": ["Toy Story", "Heat"], "year": ["1995", "1995"], "genres": ["comedy", "crime|thriller"]}
    )
    encodings = catalogue_encodings(SimpleNamespace(items=items), str(tiny_encoder), cache_dir=tmp_path)
    expected = encode_texts(["Toy Story (1995), comedy", "Heat (1995), crime, thriller"], str(tiny_encoder))
    assert torch.equal(encodings[0], torch.zeros(16)) and torch.equal(encodings[1:], expected)
    module = HybridItemEmbedding.from_catalogue(SimpleNamespace(items=items), 8, str(tiny_encoder), cache_dir=tmp_path)
    assert module.all_items().shape == (2, 8) and module.num_items == 2


def test_text_embedding_centres_projects_and_zeroes_padding():
    encodings = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 2.0]])  # row 0 = padding, excluded from the mean
    module = TextItemEmbedding(encodings, dim=2, init_std=None)
    with torch.no_grad():
        module.project[1].weight.copy_(torch.eye(2))
        module.project[1].bias.fill_(0.5)
    # mean of items 1 and 2 = (2, 1): centred rows are (-1, -1) and (1, 1), + bias 0.5; padding stays exactly 0
    torch.testing.assert_close(module(torch.tensor([[2, 1, 0]])), torch.tensor([[[1.5, 1.5], [-0.5, -0.5], [0, 0]]]))
    torch.testing.assert_close(module.all_items(), torch.tensor([[-0.5, -0.5], [1.5, 1.5]]))
    assert TextItemEmbedding(encodings, dim=5, hidden=7)(torch.zeros(3, 4, dtype=torch.long)).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="1 \\+ num_items, width"):
        TextItemEmbedding(torch.zeros(3), dim=2)


def test_text_vectors_start_at_an_id_embeddings_scale():
    torch.manual_seed(0)
    module = TextItemEmbedding(torch.randn(2001, 384) * 0.05, dim=64, init_std=0.02)
    assert abs(module.all_items().std().item() - 0.02) < 0.002


def test_hybrid_is_id_plus_text_and_all_items_matches_forward():
    torch.manual_seed(0)
    module = HybridItemEmbedding(torch.randn(6, 4), dim=3, hidden=8)
    ids = torch.tensor([[0, 5, 2], [1, 1, 3]])
    torch.testing.assert_close(module(ids), module.ids(ids) + module.text(ids))
    catalogue = torch.cat([torch.zeros(1, 3), module.all_items()])
    torch.testing.assert_close(catalogue[ids], module(ids))
    assert torch.equal(module(torch.tensor([0])), torch.zeros(1, 3))  # padding
    assert module.all_items().shape == (5, 3)


def test_hybrid_with_text_on_the_input_side_only_scores_against_ids():
    torch.manual_seed(0)
    module = HybridItemEmbedding(torch.randn(6, 4), dim=3, text_in_output=False)
    ids = torch.tensor([[0, 5, 2]])
    torch.testing.assert_close(module(ids), module.ids(ids) + module.text(ids))  # the input still reads the text
    assert torch.equal(module.all_items(), module.ids.weight[1:])
    assert not torch.equal(module(torch.tensor([5])), module.all_items()[4:5])


def test_count_gate_starts_as_the_plain_hybrid_and_weighs_text_by_training_count():
    counts = torch.tensor([0, 1, 3, 7, 15, 0])  # index 0 = padding; item 5 never trained on
    torch.manual_seed(0)
    plain = HybridItemEmbedding(torch.randn(6, 4), dim=3)
    torch.manual_seed(0)
    gated = HybridItemEmbedding(torch.randn(6, 4), dim=3, count_gate=True, train_counts=counts)
    ids = torch.tensor([[0, 5, 2, 4]])
    assert torch.equal(gated(ids), plain(ids)) and torch.equal(gated.all_items(), plain.all_items())  # a = b = 0
    logs = torch.log(1 + counts[1:].float())  # by hand: z over the catalogue items (not the padding row)
    z = (logs - logs.mean()) / logs.std()
    with torch.no_grad():
        gated.gate.copy_(torch.tensor([0.5, -1.0]))
    weight = 2 * torch.sigmoid(0.5 - z)
    torch.testing.assert_close(gated.all_items(), gated.ids.weight[1:] + weight[:, None] * gated.text.all_items())
    torch.testing.assert_close(
        gated(torch.tensor([2])), gated.ids(torch.tensor([2])) + weight[1] * gated.text(torch.tensor([2]))
    )
    assert (
        weight[4] > weight[0] > weight[1] > weight[2] > weight[3]
    )  # b < 0: more text the rarer (counts 0 < 1 < … < 15)
    gated.all_items().sum().backward()
    assert gated.gate.grad is not None and torch.all(gated.gate.grad != 0)  # a and b are trained
    with pytest.raises(ValueError, match=r"count_gate needs train_counts of length 6, got None"):
        HybridItemEmbedding(torch.randn(6, 4), dim=3, count_gate=True)


def test_catalogue_train_counts_are_the_train_split_only(ml100k_dir: Path, tmp_path: Path):
    from m6rec.data.datamodules.id_sequences import SequenceDataModule
    from m6rec.data.protocol.splits import TRAIN

    data = SequenceDataModule(data_dir=str(tmp_path), root=str(ml100k_dir), tokenizer=None)
    catalogue = data.model_inputs()["catalogue"]
    frame = data.indexed
    assert catalogue.train_counts[0] == 0 and len(catalogue.train_counts) == catalogue.num_items + 1
    by_hand = frame[frame["split"] == TRAIN]["item"].value_counts()
    assert all(catalogue.train_counts[item] == n for item, n in by_hand.items())
    assert catalogue.train_counts.sum() == (frame["split"] == TRAIN).sum() < len(frame)  # no valid / test row


def test_text_embedding_ranks_items_it_never_trained_on():
    """Items in two text clusters; a user likes cluster A. Trained on half the items, the text-only embedding puts
    the held-out half of cluster A above the held-out half of B (an ID embedding cannot: unseen rows stay random)."""
    torch.manual_seed(0)
    centres = torch.randn(2, 8)
    cluster = torch.arange(41) % 2  # item 0 = padding
    encodings = centres[cluster] + 0.3 * torch.randn(41, 8)
    encodings[0] = 0
    liked = (cluster == 0).float()
    train, held_out = torch.arange(1, 21), torch.arange(21, 41)
    module, user = TextItemEmbedding(encodings, dim=4), torch.nn.Parameter(0.1 * torch.ones(4))
    optimiser = torch.optim.Adam([*module.parameters(), user], lr=0.05)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(train) @ user, liked[train])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        scores = module(held_out) @ user
    assert scores[liked[held_out] == 1].min() > scores[liked[held_out] == 0].max()


def test_random_codes_are_seeded_by_text_unit_and_need_no_model(tmp_path: Path):
    codes = cached_text_encodings(["Heat (1995)", "Fargo (1996)", "Heat (1995)"], "random:32", tmp_path)
    assert codes.shape == (3, 32)
    assert torch.allclose(codes.norm(dim=1), torch.ones(3))
    assert torch.equal(codes[0], codes[2]) and not torch.equal(codes[0], codes[1])  # identity, not meaning
    assert torch.equal(cached_text_encodings(["Heat (1995)"], "random:32")[0], codes[0])  # same on any run
    assert not (tmp_path / "text_encodings").exists()  # nothing cached
    with pytest.raises(ValueError, match="random:<width>"):
        cached_text_encodings(["x"], "random:big")


def test_principal_components_match_the_top_directions():
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(8), dim=0)
    rows = torch.randn(200, 1) * 5 * direction + 0.1 * torch.randn(200, 8) + 3.0  # one dominant direction + offset
    first = principal_components(rows, 1)[:, 0]
    expected = (rows - rows.mean(0)) @ direction
    assert abs(torch.corrcoef(torch.stack([first, expected]))[0, 1]) > 0.999
    with pytest.raises(ValueError, match="dim 9"):
        principal_components(rows, 9)


def test_text_init_ids_start_at_the_text_pca_then_train_as_plain_ids():
    torch.manual_seed(0)
    encodings = torch.cat([torch.zeros(1, 12), torch.randn(6, 12)])
    embedding = TextInitIDEmbedding(encodings, dim=4, init_std=0.05)
    start = principal_components(encodings[1:], 4)
    assert torch.allclose(embedding.all_items(), start * 0.05 / start.std(), atol=1e-6)
    assert embedding(torch.tensor([0])).abs().sum() == 0  # padding row
    assert [name for name, _ in embedding.named_parameters()] == ["embedding.weight"]  # no text branch left


def test_text_init_ids_wider_than_the_catalogue_pad_with_random_directions():
    torch.manual_seed(0)
    encodings = torch.cat([torch.zeros(1, 12), torch.randn(3, 12)])  # 3 items: at most 3 principal directions
    vectors = TextInitIDEmbedding(encodings, dim=8, init_std=0.02).all_items()
    assert vectors.shape == (3, 8) and abs(float(vectors.std()) - 0.02) < 1e-6
    start = principal_components(encodings[1:], 3)
    assert torch.allclose(vectors[:, :3] / vectors[:, :3].norm(), start / start.norm(), atol=1e-5)


def test_joined_encoders_concatenate_their_encodings(tiny_encoder: Path, tmp_path: Path):
    joined = cached_text_encodings(TEXTS, f"{tiny_encoder}+random:8", tmp_path)
    assert joined.shape == (len(TEXTS), 16 + 8)
    assert torch.equal(joined[:, :16], cached_text_encodings(TEXTS, str(tiny_encoder), tmp_path))
    assert torch.equal(joined[:, 16:], cached_text_encodings(TEXTS, "random:8"))
