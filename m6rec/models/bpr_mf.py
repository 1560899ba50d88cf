"""BPR-MF (Rendle et al., UAI 2009): user and item vectors, score = dot product, trained with the BPR pairwise loss
against one uniformly sampled item per observed (user, item) pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m6rec.data.id_sequences import Catalogue


class BPRMF(nn.Module):
    """`dim`-dimensional user and item embeddings (normal, std `init_std`); regularise with the optimizer's weight
    decay. Batches are SequenceDataModule training windows: every item of a window is a positive of its user."""

    def __init__(self, catalogue: Catalogue, dim: int = 64, init_std: float = 0.1):
        super().__init__()
        self.users = nn.Embedding(catalogue.num_users, dim)
        self.items = nn.Embedding(catalogue.num_items + 1, dim, padding_idx=0)
        for table in (self.users, self.items):
            nn.init.normal_(table.weight, std=init_std)
        self.num_items = catalogue.num_items

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean -log σ(s(u, i) - s(u, j)) over the batch's positives (u, i), j uniform over all items."""
        sequence = batch["sequence"]
        users = batch["user"][:, None].expand_as(sequence)[sequence > 0]
        positives = sequence[sequence > 0]
        negatives = torch.randint(1, self.num_items + 1, positives.shape, device=positives.device)
        u = self.users(users)
        margin = (u * (self.items(positives) - self.items(negatives))).sum(-1)
        return -F.logsigmoid(margin).mean()

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return self.users(batch["user"])

    def item_vectors(self) -> Tensor:
        return self.items.weight[1:]
