"""An LM content model for cold items: each item is a frozen LM's encoding of its text ("Heat (1995), Action, Crime,
Thriller"), a user is the mean encoding of their history's items, score = cosine. No training, no interaction with
the scored item: the LM counterpart of the TF-IDF content baseline (m6rec.models.content)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from m6rec.data.text.render import Templates
from m6rec.models.closed_form import history_matrix
from m6rec.models.text_item_embedding import DEFAULT_ENCODER, catalogue_encodings


def unit_rows(x: Tensor) -> Tensor:
    """Rows of `x` scaled to L2 norm 1 (a zero row stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class TextContent(nn.Module):
    """Item vectors = the items' LM encodings (`encodings[i]` = item index i, row 0 = padding) minus the mean
    encoding of the TRAIN items when `centre` (set by `fit`: the mean direction says nothing about one item, and no
    held-out item enters it), L2-normalised; query = the L2-normalised mean of the distinct history items' vectors
    (zero for an empty history); score = cosine."""

    def __init__(self, encodings: Tensor, centre: bool = True):
        super().__init__()
        if encodings.dim() != 2 or len(encodings) < 2:
            raise ValueError(f"TextContent: encodings must be [1 + num_items, width], got {tuple(encodings.shape)}")
        self.register_buffer("encodings", encodings.float(), persistent=False)  # rebuilt from the cache
        self.register_buffer("mean", torch.zeros(encodings.shape[1]))  # in the checkpoint: what `fit` found
        self.centre = centre

    @classmethod
    def from_catalogue(
        cls,
        catalogue: Any,
        encoder: str = DEFAULT_ENCODER,
        template: str = Templates.candidate,
        cache_dir: str | Path | None = None,
        centre: bool = True,
    ) -> TextContent:
        """Built on `catalogue_encodings(catalogue, encoder, template, cache_dir)` (cached under `cache_dir`)."""
        return cls(catalogue_encodings(catalogue, encoder, template, cache_dir), centre=centre)

    def fit(self, users: Tensor, items: Tensor) -> None:
        """With `centre`: the mean encoding of the distinct items of the TRAIN (user, item) pairs."""
        if self.centre:
            self.mean = self.encodings[torch.unique(items)].mean(0)

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        seen = history_matrix(batch["history"], len(self.encodings) - 1)
        return unit_rows(seen @ self.item_vectors())

    def item_vectors(self) -> Tensor:
        return unit_rows(self.encodings[1:] - self.mean)
