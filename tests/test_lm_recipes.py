"""The LM-based recipes' experiments build on the fixture log and learn: SASRec with text / hybrid item embeddings
(P1, P3) and DeepFM with text fields (P2), with a tiny local encoder standing in for MiniLM."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from m6rec.build import build_datamodule_and_system
from m6rec.models.text_deepfm import TextDeepFM
from m6rec.models.text_item_embedding import HybridItemEmbedding, TextItemEmbedding
from tests.helpers import compose_config
from tests.test_text_item_embedding import tiny_encoder  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _build(experiment: str, encoder_key: str, encoder: Path, ml100k_dir: Path, tmp_path: Path, *extra: str):
    root = "data.behaviour.root" if experiment.startswith("p2") else "data.root"
    overrides = [
        f"experiment={experiment}",
        f"{root}={ml100k_dir}",
        f"paths.data_dir={tmp_path / 'cache'}",
        f"{encoder_key}={encoder}",
        *extra,
    ]
    datamodule, system = build_datamodule_and_system(compose_config(overrides, tmp_path))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, system


def _train(system, loader, steps: int, lr: float) -> list[float]:
    optimiser, losses = torch.optim.Adam(system.parameters(), lr=lr), []
    system.train()
    for epoch in range(steps):
        loader.sampler.set_epoch(epoch)  # as Lightning does: the seeded training samplers reshuffle per epoch
        for batch in loader:
            loss = system.loss(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("experiment", "module"),
    [
        ("p1_sasrec_hybrid", HybridItemEmbedding),
        ("p1_sasrec_text", TextItemEmbedding),
        ("p3_sasrec_text", TextItemEmbedding),
    ],
)
def test_sasrec_with_text_item_embeddings_learns(experiment, module, tiny_encoder, ml100k_dir, tmp_path):  # noqa: F811
    datamodule, system = _build(
        experiment,
        "model.item_embedding.encoder",
        tiny_encoder,
        ml100k_dir,
        tmp_path,
        "data.max_seq_len=8",
        "model.hidden=16",
        "model.ffn=32",
        "model.dropout=0",
    )
    assert isinstance(system.model.items, module)
    assert system.model.items.all_items().shape == (datamodule.catalogue.num_items, 16)
    losses = _train(system, datamodule.train_dataloader(), steps=60, lr=1e-2)
    uniform = math.log(datamodule.catalogue.num_items)  # the loss of a model that knows nothing
    assert abs(losses[0] - uniform) < 0.1 and losses[-1] < uniform - 0.15
    assert (tmp_path / "cache" / "text_encodings").is_dir()  # the catalogue's encodings were cached


@pytest.mark.parametrize(
    "neighbours",
    [[], ["model.features.neighbours=3"], ["model.features.neighbours=3", "model.features.similarity=cooccurrence"]],
)
def test_deepfm_with_text_profiles_learns(neighbours, tiny_encoder, ml100k_dir, tmp_path):  # noqa: F811
    datamodule, system = _build(
        "p2_deepfm_text_profile",
        "model.features.encoder",
        tiny_encoder,
        ml100k_dir,
        tmp_path,
        "data.batch_size=64",
        *neighbours,
    )
    assert isinstance(system.model, TextDeepFM) and system.model.profiled
    assert system.model.neighbours == (3 if neighbours else 0)
    assert system.model.similarity == ("cooccurrence" if len(neighbours) == 2 else "text")
    losses = _train(system, datamodule.train_dataloader(), steps=30, lr=1e-2)
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
