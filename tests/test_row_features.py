"""The joint prompt + feature model (experiment=ctr_lora_deepfm): feature ids looked up by raw id equal the feature
DataModule's, and the CTR system adds the feature model's logit to the prompt's and trains both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from m6rec.build import build_datamodule_and_system
from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.features import FeatureDataModule
from m6rec.models.factorization import DeepFM
from m6rec.models.row_features import RowFeatureModel, RowFeatures
from tests.helpers import compose_config, feature_checkpoint, fit_one_batch, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "fields",
    [
        ["user", "item", "age", "gender", "occupation", "genres", "year"],  # the default order: user, item, …
        ["genres", "user", "item", "title_words", "age"],  # multi-hot item fields first, user fields between
    ],
)
def test_row_features_equal_the_feature_datamodules_encoding(fields, ml100k_dir: Path, tmp_path: Path):
    behaviour = BehaviourLogDataModule(data_dir=str(tmp_path / "cache"), root=str(ml100k_dir), cache=False)
    data = FeatureDataModule(behaviour, fields=fields)
    samples = behaviour.samples()
    users = np.append(samples["user_id"].to_numpy(np.int64), [999, 1, 999])  # 999: absent from the tables
    items = np.append(samples["item_id"].to_numpy(np.int64), [1, 999, 999])
    looked_up = RowFeatures(data)(torch.from_numpy(users), torch.from_numpy(items))
    expected = torch.from_numpy(data.encode(users, items))
    assert looked_up.dtype == torch.long and torch.equal(looked_up, expected)
    user_column, unknown = sum(data.field_slots[: fields.index("user")]), data.offsets["user"]
    assert looked_up[-3, user_column] == unknown and looked_up[-2, user_column] == unknown + 1  # user 1: first known


def test_joint_system_adds_the_feature_logit_and_trains_both_parts(ml100k_dir: Path, tmp_path: Path):
    cfg = compose_config(
        ["experiment=ctr_lora_deepfm", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}"], tmp_path
    )
    datamodule, system = build_datamodule_and_system(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    system.eval()
    with torch.no_grad():
        prompt = system.prompt_logits(batch)
        wide = system.features(batch["user_ids"], batch["item_ids"])
        assert torch.allclose(system(batch), prompt + wide)
        assert wide.abs().max() > 0 and prompt.abs().max() > 0  # both parts speak from the start

    system.train()
    feature_weights = system.features.model.mlp[0].weight.detach().clone()
    lora = {n: p.detach().clone() for n, p in system.model.named_parameters() if p.requires_grad and "lora_B" in n}
    losses = fit_one_batch(system, batch, steps=30, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0], losses  # one batch, fitted
    assert not torch.equal(system.features.model.mlp[0].weight, feature_weights)  # the DeepFM trains…
    moved = [n for n, p in system.model.named_parameters() if n in lora and not torch.equal(p, lora[n])]
    assert lora and moved  # …and so does LoRA


def test_residual_starts_at_the_loaded_prior_and_keeps_it_fixed(ml100k_dir: Path, tmp_path: Path):
    checkpoint, _, deepfm = feature_checkpoint(ml100k_dir, tmp_path)
    cfg = compose_config(
        [
            "experiment=ctr_lora_deepfm_residual",
            f"task.features.checkpoint={checkpoint}",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={tmp_path / 'cache'}",
        ],
        tmp_path,
    )
    datamodule, system = build_datamodule_and_system(cfg)
    for name, weight in deepfm.model.state_dict().items():  # every weight and buffer, loaded as saved
        assert torch.equal(system.features.model.state_dict()[name], weight), name
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    deepfm.eval()
    features = system.features.features(batch["user_ids"], batch["item_ids"])
    prior = deepfm.model(features, batch["user_ids"], batch["item_ids"])
    system.train()  # the prior stays in eval mode (no dropout), the prompt head starts at zero
    assert not system.features.model.training and system.model.training
    assert torch.allclose(system(batch), prior, rtol=0, atol=1e-6)

    fit_one_batch(system, batch, steps=3, lr=1e-2)
    assert not any(p.requires_grad for p in system.features.parameters())
    assert all(torch.equal(w, system.features.model.state_dict()[n]) for n, w in deepfm.model.state_dict().items())
    assert not torch.equal(system(batch), prior)  # the prompt model has learned something on top


def test_residual_without_a_finished_feature_run_is_a_clear_error(tmp_path: Path, ml100k_dir: Path):
    behaviour = BehaviourLogDataModule(data_dir=str(tmp_path / "cache"), root=str(ml100k_dir), cache=False)
    data = FeatureDataModule(behaviour)
    with pytest.raises(ValueError, match="task.features.trainable=false .* set task.features.checkpoint"):
        RowFeatureModel(data, DeepFM, reads_ids=False, trainable=False)
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"task.features.checkpoint: .*run has no metrics.json"):
        RowFeatureModel(data, DeepFM, reads_ids=False, checkpoint=str(tmp_path / "run"))
    torch.save({"state_dict": {"model.bias": torch.zeros(())}}, tmp_path / "lr.ckpt")
    with pytest.raises(ValueError, match=r"task.features.checkpoint: .*lr.ckpt does not fit task.features.model"):
        RowFeatureModel(data, DeepFM, reads_ids=False, checkpoint=str(tmp_path / "lr.ckpt"))


def test_joint_parts_rescores_a_finished_joint_run(ml100k_dir: Path, tmp_path: Path):
    from benchmarks.joint_parts import main as joint_parts

    run = tmp_path / "logs" / "quality" / "P2" / "ctr_lora_deepfm" / "default" / "seed0"
    data = [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}", "data.batch_size=32"]
    quiet = ["logger=csv", "~callbacks.rich_progress_bar", "~callbacks.model_summary", "trainer.max_epochs=1"]
    run_cli(["experiment=ctr_lora_deepfm", *data, *quiet, f"hydra.run.dir={run}"], tmp_path)
    out = tmp_path / "parts.json"
    [row] = joint_parts(["ctr_lora_deepfm", "--seeds", "0", "--log-dir", str(tmp_path / "logs"), "--out", str(out)])
    logged = json.loads((run / "metrics.json").read_text())["test/auc"]
    assert row["sum"]["mean"] == pytest.approx(logged, abs=1e-4)  # the rebuilt joint model is the one tested
    assert all(0.0 <= row[part]["mean"] <= 1.0 for part in ("prompt", "features"))
    assert json.loads(out.read_text()) == [row]


def test_joint_parts_without_a_checkpoint_is_a_clear_error(tmp_path: Path):
    from benchmarks.joint_parts import part_aucs

    (tmp_path / "metrics.json").write_text(json.dumps({"test/auc": 0.78}))
    with pytest.raises(
        SystemExit, match=r"no best checkpoint \(metrics.json best_checkpoint\); rerun quality.py first"
    ):
        part_aucs(tmp_path)
