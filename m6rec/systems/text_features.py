"""CTR with a feature model that also reads the user's and item's text (m6rec.models.text_deepfm): the feature
baselines' objective and metrics, the model given the row's raw user and item ids beside its feature ids."""

from __future__ import annotations

import torch

from m6rec.systems.features import FeatureCTRSystem


class TextFeatureCTRSystem(FeatureCTRSystem):
    """FeatureCTRSystem whose model is called as `model(features, user_ids, item_ids)`."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["features"], batch["user_ids"], batch["item_ids"])
