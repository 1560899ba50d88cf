"""init_weights: a new run starts from another run's weights (UniSRec's stage two: text-only SASRec → hybrid)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from m6rec.utils.errors import ConfigError
from m6rec.utils.init_weights import initial_checkpoint, load_initial_weights, renamed
from tests.helpers import compose_config
from tests.test_lm_recipes import _build
from tests.test_text_item_embedding import tiny_encoder  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ("data.max_seq_len=8", "model.hidden=16", "model.ffn=32")


def _system(experiment: str, encoder: Path, ml100k_dir: Path, tmp_path: Path, *extra: str):
    return _build(experiment, "model.item_embedding.encoder", encoder, ml100k_dir, tmp_path, *SMALL, *extra)[1]


def test_renamed_replaces_the_first_matching_prefix_only():
    rename = {"model.items.": "model.items.text.", "model.": "net."}
    assert renamed("model.items.project.1.weight", rename) == "model.items.text.project.1.weight"
    assert renamed("model.blocks.0.weight", rename) == "net.blocks.0.weight"
    assert renamed("other.weight", rename) == "other.weight"


def test_hybrid_starts_from_the_text_only_run(tiny_encoder, ml100k_dir, tmp_path):  # noqa: F811
    text = _system("p1_sasrec_text", tiny_encoder, ml100k_dir, tmp_path, "seed=1")
    with torch.no_grad():  # weights no fresh build has: the copy must come from the checkpoint
        for param in text.parameters():
            param.add_(0.5)
    run = tmp_path / "text_run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": text.state_dict()}, run / "checkpoints" / "epoch_003.ckpt")
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": "/elsewhere/checkpoints/epoch_003.ckpt"}))

    hybrid = _system("p1_sasrec_hybrid_from_text", tiny_encoder, ml100k_dir, tmp_path, "init_weights.path=x")
    config = compose_config(["experiment=p1_sasrec_hybrid_from_text"], tmp_path)
    rename = dict(config.init_weights.rename)  # the experiment's own map
    own_ids = hybrid.model.items.ids.weight.detach().clone()
    taken = load_initial_weights(hybrid, run, rename)  # a run directory: its chosen checkpoint, found by name

    source, target = text.state_dict(), hybrid.state_dict()
    assert set(taken) == {renamed(key, rename) for key in source}  # every source tensor found its place
    assert all(torch.equal(target[renamed(key, rename)], value) for key, value in source.items())
    assert torch.equal(hybrid.model.items.ids.weight, own_ids)  # what the source lacks keeps its initialisation
    assert any(".blocks." in key or "attention" in key for key in taken)  # the transformer came along


def test_bad_sources_are_one_line_config_errors(tiny_encoder, ml100k_dir, tmp_path):  # noqa: F811
    system = _system("p1_sasrec_text", tiny_encoder, ml100k_dir, tmp_path)
    with pytest.raises(ConfigError, match=r"^init_weights.path: .*nowhere is neither a checkpoint file nor a run"):
        load_initial_weights(system, tmp_path / "nowhere")
    torch.save({"state_dict": {"other.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match=r"other.ckpt shares no weight with this model \(see init_weights.rename\)"):
        load_initial_weights(system, tmp_path / "other.ckpt")
    key, value = next(iter(system.state_dict().items()))
    torch.save({"state_dict": {key: torch.zeros(*value.shape, 3)}}, tmp_path / "wide.ckpt")
    with pytest.raises(ConfigError, match=rf"wide.ckpt: {key} has shape .* in the source, .* here$"):
        load_initial_weights(system, tmp_path / "wide.ckpt")


def test_the_start_checkpoint_is_read_from_the_config(tmp_path):
    config = compose_config(["experiment=p1_sasrec_hybrid_from_text"], tmp_path)
    with pytest.raises(ConfigError, match=r"^init_weights.path: this experiment starts from another run"):
        initial_checkpoint(config)  # it says init_weights.required and no path was given
    config.init_weights.path = str(tmp_path / "a.ckpt")
    with pytest.raises(ConfigError, match=r"a.ckpt is neither a checkpoint file nor a run directory"):
        initial_checkpoint(config)
    (tmp_path / "a.ckpt").write_bytes(b"")
    assert initial_checkpoint(config) == tmp_path / "a.ckpt"
    config.train = False  # testing a checkpoint: nothing to start from
    assert initial_checkpoint(config) is None
    assert initial_checkpoint(compose_config(["experiment=p1_sasrec"], tmp_path)) is None  # the default: none
