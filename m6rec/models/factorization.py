"""Classic feature-id models for CTR and rating baselines: LR, FM (Rendle 2010), DeepFM (Guo et al. 2017), biased MF.

Every model reads `features`, a (batch, slots) tensor of global feature ids (0 = an empty slot, whose weight and
embedding stay zero), laid out field by field as `field_slots` says (m6rec.data.datamodules.features), and returns
one score per row (a logit for CTR, a rating for regression). Each has a scalar `bias` that a system may initialise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PADDING = 0  # the feature id of an empty slot (e.g. the unused genre slots of a movie)


def _check_width(features: torch.Tensor, field_slots: Sequence[int]) -> None:
    if features.ndim != 2 or features.shape[1] != sum(field_slots):
        raise ValueError(
            f"features: expected (batch, {sum(field_slots)}) ids for field slots {list(field_slots)}, "
            f"got shape {tuple(features.shape)}"
        )


def _embedding(num_features: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(num_features, dim, padding_idx=PADDING)
    nn.init.normal_(table.weight, std=std)
    with torch.no_grad():
        table.weight[PADDING].zero_()
    return table


class LogisticRegression(nn.Module):
    """bias + the sum of the weights of the row's features (a linear model on one-hot / multi-hot features)."""

    def __init__(self, num_features: int, field_slots: Sequence[int]):
        super().__init__()
        self.field_slots = list(field_slots)
        self.bias = nn.Parameter(torch.zeros(()))
        self.weights = _embedding(num_features, 1, std=0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_width(features, self.field_slots)
        return self.bias + self.weights(features).sum(dim=(1, 2))


def pairwise_interactions(embeddings: torch.Tensor) -> torch.Tensor:
    """FM's second-order term Σ_{j<k} <v_j, v_k> of (batch, slots, dim) embeddings, in O(slots·dim) by Rendle's
    identity ½ Σ_d [(Σ_j v_jd)² − Σ_j v_jd²]."""
    square_of_sum = embeddings.sum(dim=1).pow(2)
    sum_of_squares = embeddings.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


class FactorizationMachine(nn.Module):
    """Rendle's second-order FM: bias + Σ_j w_j + Σ_{j<k} <v_j, v_k> over the row's features (binary values)."""

    def __init__(self, num_features: int, field_slots: Sequence[int], embed_dim: int = 16, init_std: float = 0.01):
        super().__init__()
        self.field_slots = list(field_slots)
        self.linear = LogisticRegression(num_features, field_slots)
        self.embeddings = _embedding(num_features, embed_dim, init_std)

    @property
    def bias(self) -> nn.Parameter:
        return self.linear.bias

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) + pairwise_interactions(self.embeddings(features))


class DeepFM(nn.Module):
    """FM plus an MLP over the concatenated field embeddings (one per field: the mean of its non-empty slots), the
    two parts sharing the embeddings and adding their logits (Guo et al. 2017)."""

    def __init__(
        self,
        num_features: int,
        field_slots: Sequence[int],
        embed_dim: int = 16,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.2,
        init_std: float = 0.01,
    ):
        super().__init__()
        self.fm = FactorizationMachine(num_features, field_slots, embed_dim, init_std)
        field_of_slot = torch.repeat_interleave(torch.arange(len(field_slots)), torch.tensor(list(field_slots)))
        self.register_buffer("field_of_slot", field_of_slot, persistent=False)
        layers: list[nn.Module] = []
        width = len(field_slots) * embed_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    @property
    def bias(self) -> nn.Parameter:
        return self.fm.bias

    def field_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, fields · dim): each field's embedding, the mean over its non-empty slots (zero if all empty)."""
        embeddings = self.fm.embeddings(features)  # empty slots embed to zero
        batch, fields, dim = len(features), len(self.fm.field_slots), embeddings.shape[-1]
        index = self.field_of_slot.expand(batch, -1)
        sums = embeddings.new_zeros(batch, fields, dim).scatter_add_(
            1, index.unsqueeze(-1).expand(-1, -1, dim), embeddings
        )
        counts = embeddings.new_zeros(batch, fields).scatter_add_(1, index, (features != PADDING).to(embeddings.dtype))
        return (sums / counts.clamp(min=1).unsqueeze(-1)).flatten(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fm(features) + self.mlp(self.field_embeddings(features)).squeeze(-1)


class BiasedMF(nn.Module):
    """μ + b_u + b_i + <p_u, q_i> (Koren 2009) on rows of exactly two one-slot fields, user then item
    (data.fields=[user, item])."""

    def __init__(self, num_features: int, field_slots: Sequence[int], embed_dim: int = 32, init_std: float = 0.01):
        super().__init__()
        if list(field_slots) != [1, 1]:
            raise ValueError(
                f"model=mf reads two one-slot fields (data.fields=[user, item]), got field slots {list(field_slots)}"
            )
        self.bias = nn.Parameter(torch.zeros(()))
        self.biases = _embedding(num_features, 1, std=0.0)
        self.factors = _embedding(num_features, embed_dim, init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_width(features, [1, 1])
        factors = self.factors(features)
        return self.bias + self.biases(features).sum(dim=(1, 2)) + (factors[:, 0] * factors[:, 1]).sum(dim=-1)
