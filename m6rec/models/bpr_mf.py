"""BPR-MF (Rendle et al., UAI 2009): user and item vectors, score = dot product, trained with the BPR pairwise loss
against one item per observed (user, item) pair, sampled uniformly from the items the user did not train on (as
RecBole's BPR: Xavier-normal init, no regulariser besides the optimizer's weight decay)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m6rec.data.datamodules.id_sequences import Catalogue

MAX_RESAMPLES = 100  # rejection rounds for a negative; a user who trained on every item fails loudly


class BPRMF(nn.Module):
    """`dim`-dimensional user and item embeddings (Xavier normal, RecBole's init); regularise with the optimizer's
    weight decay. Batches are SequenceDataModule training rows (`data.train_rows=pairs`: one (user, item) pair per
    row; with windows every item of a window is a positive of its user). `fit(users, items)` (ItemRankingSystem calls
    it at fit start with the TRAIN interactions) tells the sampler which items are a user's positives."""

    def __init__(self, catalogue: Catalogue, dim: int = 64):
        super().__init__()
        self.users = nn.Embedding(catalogue.num_users, dim)
        self.items = nn.Embedding(catalogue.num_items + 1, dim, padding_idx=0)
        for table in (self.users, self.items):
            nn.init.xavier_normal_(table.weight)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.num_items = catalogue.num_items
        self.register_buffer("trained", torch.zeros(0, 0, dtype=torch.bool), persistent=False)

    def fit(self, users: Tensor, items: Tensor) -> None:
        """Remember the TRAIN pairs (user index, item index): negatives are drawn outside each user's items."""
        trained = torch.zeros(self.users.num_embeddings, self.num_items + 1, dtype=torch.bool, device=users.device)
        trained[users, items] = True
        trained[:, 0] = True  # padding is never a negative
        self.trained = trained

    def sample_negatives(self, users: Tensor) -> Tensor:
        """One item index per user, uniform over the items that user did not train on (rejection sampling)."""
        if self.trained.numel() == 0:
            raise RuntimeError("BPRMF: call fit(users, items) with the TRAIN interactions before training")
        negatives = torch.randint(1, self.num_items + 1, users.shape, device=users.device)
        for _ in range(MAX_RESAMPLES):
            clash = self.trained[users, negatives]
            if not bool(clash.any()):
                return negatives
            negatives[clash] = torch.randint(1, self.num_items + 1, (int(clash.sum()),), device=users.device)
        raise RuntimeError(f"BPRMF: no negative found in {MAX_RESAMPLES} draws (a user trained on every item?)")

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean -log σ(s(u, i) - s(u, j)) over the batch's positives (u, i), j = `sample_negatives(u)`."""
        sequence = batch["sequence"]
        users = batch["user"][:, None].expand_as(sequence)[sequence > 0]
        positives = sequence[sequence > 0]
        u = self.users(users)
        margin = (u * (self.items(positives) - self.items(self.sample_negatives(users)))).sum(-1)
        return -F.logsigmoid(margin).mean()

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        return self.users(batch["user"])

    def item_vectors(self) -> Tensor:
        return self.items.weight[1:]
