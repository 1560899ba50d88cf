"""Classic P2 baselines: the feature DataModule (ids by hand, the LM CTR DataModule's rows), FM's pairwise term, and
every feature model learning a planted pattern."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from m6rec.data.datamodules.behaviour_log import BehaviourLogDataModule
from m6rec.data.datamodules.features import FeatureDataModule, title_words
from m6rec.data.protocol.splits import TEST, TRAIN, VALID
from m6rec.models.factorization import BiasedMF, DeepFM, FactorizationMachine, LogisticRegression, pairwise_interactions
from m6rec.systems.features import FeatureCTRSystem, FeatureRatingSystem
from tests.fixtures import make_log, write_grouplens
from tests.helpers import compose_config, experiment_data

pytestmark = pytest.mark.usefixtures("one_thread")


def features_of(root: Path, tmp_path: Path, **kwargs) -> FeatureDataModule:
    behaviour = BehaviourLogDataModule(data_dir=str(tmp_path / "cache"), root=str(root), cache=False)
    datamodule = FeatureDataModule(behaviour, **kwargs)
    datamodule.setup()
    return datamodule


def test_fm_pairwise_term_is_the_explicit_double_sum():
    v = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 2.0]]])
    # <v1,v2> + <v1,v3> + <v2,v3> = (3 - 2) + (0 + 4) + (0 - 2) = 3
    assert pairwise_interactions(v).item() == pytest.approx(3.0)
    fm = FactorizationMachine(num_features=4, field_slots=[1, 1, 1, 1], embed_dim=2)
    with torch.no_grad():
        fm.embeddings.weight[1:] = v[0]
        fm.linear.weights.weight[1:, 0] = torch.tensor([0.5, -1.0, 2.0])
        fm.bias.fill_(0.25)
    features = torch.tensor([[1, 2, 3, 0]])  # slot 4 empty: id 0 adds nothing
    explicit = 0.25 + (0.5 - 1.0 + 2.0) + sum(float(v[0, j] @ v[0, k]) for j in range(3) for k in range(j + 1, 3))
    assert fm(features).item() == pytest.approx(explicit)  # 0.25 + 1.5 + 3


def test_feature_ids_of_one_row_by_hand(ml100k_dir: Path, tmp_path: Path):
    dm = features_of(ml100k_dir, tmp_path)
    # fixture: users 1..16, items 1..30; user 1 is 18, M, technician; item 1 is Toy Story (1995),
    # Animation|Children's|Comedy; the most genres an item has is 3 (Toy Story, Heat, Fargo)
    assert dm.field_slots == [1, 1, 1, 1, 1, 3, 1]
    sizes = {f: 1 + len(v) for f, v in dm.vocabularies.items()}  # each field: "unknown" + its values
    assert sizes["user"] == 17 and sizes["item"] == 31 and sizes["gender"] == 3 and sizes["occupation"] == 6
    assert dm.vocabularies["age"] == ["18-24", "25-34", "35-44", "45-49", "50-55", "56+"]  # fixture ages 18..63
    assert dm.vocabularies["year"] == ["1980s", "1990s"]  # fixture years 1980..1999
    row = dm.encode(np.array([1]), np.array([1]))[0].tolist()
    user, item, age, gender, occupation, genres, year = 1, 18, 49, 56, 59, 65, 85  # block starts ("unknown" ids)
    assert [user, item, age, gender, occupation, genres, year] == list(dm.offsets.values())
    assert genres + sizes["genres"] == year and year + sizes["year"] == dm.num_features
    genre = {g: 1 + k for k, g in enumerate(dm.vocabularies["genres"])}
    assert row == [
        user + 1,
        item + 1,
        age + 1,
        gender + 2,
        occupation + 4,  # "18-24"; M after F; technician 4th
        genres + genre["Animation"],
        genres + genre["Children's"],
        genres + genre["Comedy"],
        year + 2,
    ]
    assert dm.encode(np.array([99]), np.array([2]))[0, :5].tolist() == [user, item + 2, age, gender, occupation]


def test_title_words_keep_words_shared_by_two_titles():
    titles = pd.Series(["Toy Story", "Story of Us, The", "Café au lait", "The Café", "Schindler's List", None])
    # story, the, café: in two titles each; every other word in one only
    assert title_words(titles).tolist() == [["story"], ["story", "the"], ["café"], ["the", "café"], [], []]
    assert title_words(titles, min_items=1)[4] == ["schindler's", "list"]


def test_title_words_field_is_multi_hot_and_opt_in(ml100k_dir: Path, tmp_path: Path):
    dm = features_of(ml100k_dir, tmp_path, fields=["item", "title_words"])
    # fixture titles: Toy Story, Heat, Café au lait, Fargo, unknown, then "Movie 6" … "Movie 30": only "movie" repeats
    assert dm.vocabularies["title_words"] == ["movie"] and dm.field_slots == [1, 1]
    words = dm.offsets["title_words"]
    assert dm.encode(np.array([1, 1]), np.array([1, 6]))[:, 1].tolist() == [0, words + 1]  # Toy Story: empty slot
    assert "title_words" not in features_of(ml100k_dir, tmp_path).vocabularies  # not a default field


def test_same_rows_labels_and_split_as_the_lm_ctr_datamodule(ml100k_dir: Path, tmp_path: Path):
    per_experiment = {}
    for experiment in ("ctr_lora", "p2_deepfm"):
        cfg = compose_config([f"experiment={experiment}"], tmp_path)
        cfg = compose_config([f"experiment={experiment}", *experiment_data(cfg, ml100k_dir, tmp_path)], tmp_path)
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        per_experiment[experiment] = datamodule.datasets
    lm, features = per_experiment["ctr_lora"], per_experiment["p2_deepfm"]
    for split in ("train", "valid", "test"):
        rows = features[split].columns
        assert len(rows["labels"]) == len(lm[split]) > 0
        np.testing.assert_array_equal(rows["user_ids"].numpy(), lm[split].user_ids)
        np.testing.assert_array_equal(rows["item_ids"].numpy(), lm[split].item_ids)
        np.testing.assert_array_equal(rows["labels"].numpy(), lm[split].labels)
        np.testing.assert_array_equal(rows["ratings"].numpy(), lm[split].ratings)


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory) -> Path:
    """60 users x 20 of 30 items; liked (5) when the item's id is odd, else disliked (1)."""
    log = make_log(n_users=60, n_items=30, per_user=20, seed=1)
    log["ratings"] = [(u, i, 5 if i % 2 else 1, t) for u, i, _, t in log["ratings"]]
    return write_grouplens(tmp_path_factory.mktemp("planted"), log)


def fit(system: L.LightningModule, datamodule: FeatureDataModule, epochs: int) -> dict[str, float]:
    """Train for `epochs`, then validate; returns the training loss on the whole train split before/after."""
    train = datamodule.datasets["train"].columns
    with torch.no_grad():
        before = float(system.loss(train))
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(system, datamodule=datamodule)
    system.eval()
    with torch.no_grad():
        after = float(system.loss(train))
    return {
        "before": before,
        "after": after,
        **{k: float(v) for k, v in trainer.validate(system, datamodule, verbose=False)[0].items()},
    }


@pytest.mark.parametrize("model", [LogisticRegression, FactorizationMachine, DeepFM])
def test_each_ctr_model_learns_the_planted_pattern(model, planted_dir: Path, tmp_path: Path):
    L.seed_everything(0)
    dm = features_of(planted_dir, tmp_path, batch_size=64)
    system = FeatureCTRSystem(model(dm.num_features, dm.field_slots), partial(torch.optim.AdamW, lr=0.05))
    result = fit(system, dm, epochs=10)
    assert result["after"] < 0.5 * result["before"]
    assert result["val/auc"] > 0.95  # held-out rows of items seen in training


def test_fm_learns_a_gender_by_item_interaction_that_lr_cannot(tmp_path: Path):
    log = make_log(n_users=60, n_items=30, per_user=20, seed=2)
    gender = {user["user_id"]: user["gender"] for user in log["users"]}
    log["ratings"] = [(u, i, 5 if (gender[u] == "M") == bool(i % 2) else 1, t) for u, i, _, t in log["ratings"]]
    dm = features_of(write_grouplens(tmp_path / "xor", log), tmp_path, fields=["item", "gender"], batch_size=64)
    auc = {}
    for model in (LogisticRegression, FactorizationMachine):
        L.seed_everything(0)
        system = FeatureCTRSystem(model(dm.num_features, dm.field_slots), partial(torch.optim.AdamW, lr=0.05))
        auc[model.__name__] = fit(system, dm, epochs=10)["val/auc"]
    assert auc["LogisticRegression"] < 0.65 < 0.95 < auc["FactorizationMachine"]  # each item: liked by one gender


def test_biased_mf_learns_the_planted_ratings(planted_dir: Path, tmp_path: Path):
    L.seed_everything(0)
    dm = features_of(planted_dir, tmp_path, fields=["user", "item"], batch_size=64)
    system = FeatureRatingSystem(BiasedMF(dm.num_features, dm.field_slots), partial(torch.optim.AdamW, lr=0.05))
    result = fit(system, dm, epochs=10)
    assert result["after"] < 0.25 * result["before"]
    assert result["val/rmse"] < 0.5  # the mean predictor's RMSE is 2 (ratings 1 and 5, half each)


def test_bad_fields_are_named(tmp_path: Path):
    behaviour = BehaviourLogDataModule(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="data.fields"):
        FeatureDataModule(behaviour, fields=["user", "zip"])
    with pytest.raises(ValueError, match=r"data.fields=\[user, item\]"):
        BiasedMF(10, [1, 1, 3])


def test_train_fraction_drops_train_rows_only(ml100k_dir: Path, tmp_path: Path):
    """`data.train_fraction`: the same VALID / TEST rows as the full log; a quarter of its TRAIN rows, and only those
    reach the feature DataModule's training set."""

    def rows(dm: BehaviourLogDataModule, code: int) -> set[tuple[int, int]]:
        inter = dm.interactions[dm.split_codes() == code]
        return set(zip(inter["user_id"], inter["item_id"], strict=True))

    full = BehaviourLogDataModule(data_dir=str(tmp_path / "full"), root=str(ml100k_dir), cache=False)
    part = BehaviourLogDataModule(
        data_dir=str(tmp_path / "part"), root=str(ml100k_dir), cache=False, train_fraction=0.25
    )
    for code in (VALID, TEST):
        assert rows(part, code) == rows(full, code)
    n_train = len(rows(full, TRAIN))
    assert rows(part, TRAIN) < rows(full, TRAIN) and len(rows(part, TRAIN)) == round(0.25 * n_train)
    features = FeatureDataModule(part)
    features.setup()
    assert len(features.datasets["train"]) == round(0.25 * n_train)
    assert len(features.datasets["test"]) == len(rows(full, TEST))
    with pytest.raises(ValueError, match=r"^data\.train_fraction: need 0 < fraction <= 1, got 0$"):
        BehaviourLogDataModule(data_dir=str(tmp_path), train_fraction=0)
    with pytest.raises(ValueError, match=r"^data\.train_fraction: < 1 needs data\.negatives\.ratio=0 in implicit"):
        BehaviourLogDataModule(data_dir=str(tmp_path), train_fraction=0.5, implicit=True)
    BehaviourLogDataModule(data_dir=str(tmp_path), train_fraction=0.5, implicit=True, negatives={"ratio": 0})
