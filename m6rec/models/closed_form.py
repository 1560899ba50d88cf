"""Recommenders fitted without gradients, from the TRAIN interactions (`fit(users, items)`), or not fitted at all:
popularity, EASE and seeded random scores. Their scores factor as `query_vectors(batch) @ item_vectors().T`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from m6rec.data.datamodules.id_sequences import Catalogue


def history_matrix(history: Tensor, num_items: int) -> Tensor:
    """Multi-hot (B, num_items) rows of left-padded item-index sequences (B, L) (index i → column i - 1)."""
    rows = torch.zeros(len(history), num_items + 1, device=history.device)
    rows.scatter_(1, history, 1.0)
    return rows[:, 1:]


class Popularity(nn.Module):
    """Every user gets the same scores: the item's number of TRAIN interactions (ties ranked pessimistically)."""

    def __init__(self, catalogue: Catalogue):
        super().__init__()
        self.register_buffer("counts", torch.zeros(catalogue.num_items))

    def fit(self, users: Tensor, items: Tensor) -> None:
        self.counts = torch.bincount(items - 1, minlength=len(self.counts)).float().to(self.counts.device)

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.ones(len(batch["user"]), 1, device=self.counts.device)

    def item_vectors(self) -> Tensor:
        return self.counts[:, None]


class EASE(nn.Module):
    """EASE (Steck, WWW 2019): item-item weights B = argmin ‖X - XB‖² + λ‖B‖², diag(B) = 0, in closed form
    (P = (XᵀX + λI)⁻¹, B = -P / diag(P)); a query's scores are its history's multi-hot row times B."""

    def __init__(self, catalogue: Catalogue, l2: float = 500.0):
        super().__init__()
        if l2 <= 0:
            raise ValueError(f"model.l2: must be > 0, got {l2}")
        self.l2, self.num_users = float(l2), catalogue.num_users
        self.register_buffer("weights", torch.zeros(catalogue.num_items, catalogue.num_items))

    def fit(self, users: Tensor, items: Tensor) -> None:
        x = torch.zeros(self.num_users, len(self.weights), dtype=torch.float64)
        x[users, items - 1] = 1.0
        gram = x.T @ x + self.l2 * torch.eye(len(self.weights), dtype=torch.float64)
        p = torch.linalg.inv(gram)
        b = -p / torch.diagonal(p)[None, :]
        b.fill_diagonal_(0.0)
        self.weights = b.float().to(self.weights.device)

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return history_matrix(batch["history"], len(self.weights))

    def item_vectors(self) -> Tensor:
        return self.weights.T  # (query @ B)[j] = query · B[:, j]


class RandomScores(nn.Module):
    """Uniform random scores, fixed per (user, item) by `seed`: the chance level of a protocol."""

    def __init__(self, catalogue: Catalogue, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer(
            "scores", torch.rand(catalogue.num_users, catalogue.num_items, generator=generator), persistent=False
        )

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return self.scores[batch["user"]]

    def item_vectors(self) -> Tensor:
        return torch.eye(self.scores.size(1), device=self.scores.device)
