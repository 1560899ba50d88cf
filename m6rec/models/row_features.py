"""A feature model (LR, FM, DeepFM, TextDeepFM) that reads a row by its raw user and item ids: the FeatureDataModule's
feature ids of every user and item are computed once into lookup tables, so it runs beside a text model on the text
DataModule's batches (which carry `user_ids`, `item_ids`) — the "wide" part of a prompt model (task.features)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from m6rec.data.datamodules.features import USER_FIELDS, FeatureDataModule
from m6rec.utils.run_record import best_checkpoint


class RowFeatures(nn.Module):
    """(user ids, item ids) → (batch, slots) global feature ids, equal to `FeatureDataModule.encode`'s; an id outside
    the tables reads that field's "unknown" ids."""

    def __init__(self, data: FeatureDataModule):
        super().__init__()
        frames = data.entity_values
        users, items = frames["user"].index.to_numpy(np.int64), frames["item"].index.to_numpy(np.int64)
        unknown_user, unknown_item = int(users.max()) + 1, int(items.max()) + 1  # ids absent from the tables
        users, items = np.append(users, unknown_user), np.append(items, unknown_item)
        user_side = np.concatenate(
            [[field in USER_FIELDS] * slots for field, slots in zip(data.hparams.fields, data.field_slots, strict=True)]
        ).astype(bool)
        by_user = data.encode(users, np.full(len(users), unknown_item))[:, user_side]
        by_item = data.encode(np.full(len(items), unknown_user), items)[:, ~user_side]
        user_table = np.tile(by_user[-1], (unknown_user + 1, 1))
        item_table = np.tile(by_item[-1], (unknown_item + 1, 1))
        user_table[users], item_table[items] = by_user, by_item
        self.register_buffer("user_table", torch.from_numpy(user_table), persistent=False)
        self.register_buffer("item_table", torch.from_numpy(item_table), persistent=False)
        self.register_buffer("user_side", torch.from_numpy(user_side), persistent=False)

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        users = user_ids.clamp(0, len(self.user_table) - 1)
        items = item_ids.clamp(0, len(self.item_table) - 1)
        features = user_ids.new_zeros(len(user_ids), len(self.user_side))
        features[:, self.user_side] = self.user_table[users]
        features[:, ~self.user_side] = self.item_table[items]
        return features


class RowFeatureModel(nn.Module):
    """`model` (built for `data`'s feature ids) scoring rows given as raw ids: `model(features, user_ids, item_ids)`
    for a model that reads them (TextDeepFM), else `model(features)`. One logit per row.

    `checkpoint`: start from a trained feature run's weights (its .ckpt, or its run directory: the best checkpoint
    its metrics.json names); `trainable=False` then keeps them fixed and in eval mode, a prior whose residual the
    prompt model learns."""

    def __init__(
        self,
        data: FeatureDataModule,
        model: Callable[..., nn.Module],
        reads_ids: bool = True,
        checkpoint: str | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        if not trainable and not checkpoint:
            raise ValueError("task.features.trainable=false would fix an untrained model: set task.features.checkpoint")
        self.features = RowFeatures(data)
        extra = {"behaviour": data.behaviour} if reads_ids else {}
        self.model = model(**data.model_inputs(), **extra)
        self.reads_ids, self.trainable = reads_ids, trainable
        if checkpoint:
            load_feature_weights(self.model, checkpoint)
        self.model.requires_grad_(trainable)

    def train(self, mode: bool = True) -> RowFeatureModel:
        super().train(mode)
        self.model.train(mode and self.trainable)  # a fixed prior never drops out
        return self

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        features = self.features(user_ids, item_ids)
        if not self.reads_ids:
            return self.model(features)
        return self.model(features, user_ids, item_ids)


def load_feature_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load a feature system's trained `model.*` weights (FeatureCTRSystem / TextFeatureCTRSystem checkpoint) into
    `model`; `checkpoint` is the .ckpt or the run directory whose metrics.json names its best checkpoint."""
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / "metrics.json").is_file():
            raise FileNotFoundError(f"task.features.checkpoint: {path} has no metrics.json (run it to the end first)")
        best = best_checkpoint(path)
        if best is None:
            raise FileNotFoundError(f"task.features.checkpoint: {path}/metrics.json names no checkpoint that exists")
        path = best
    if not path.is_file():
        raise FileNotFoundError(f"task.features.checkpoint: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        what = (
            f"missing {missing[0]}"
            if missing
            else f"unexpected {unexpected[0]}"
            if unexpected
            else f"{shapes[0]} is {tuple(weights[shapes[0]].shape)}, not {tuple(expected[shapes[0]].shape)}"
        )
        raise ValueError(f"task.features.checkpoint: {path} does not fit task.features.model ({what})")
    model.load_state_dict(weights)
