"""ItemRankingSystem: an ID-based recommender (m6rec.models: SASRec, BPR-MF, Pop, EASE, TF-IDF content, random)
ranked over the datamodule's item catalogue with the project's exact evaluator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection

from m6rec.metrics.all_relevant import AllRelevantRankingMetrics, all_target_ranks
from m6rec.metrics.ranking import RankingMetrics
from m6rec.systems.base import TaskSystem

RELEVANT = ("one", "all")


class ItemRankingSystem(TaskSystem):
    """The model gives `query_vectors(batch) -> (B, d)` and `item_vectors() -> (num_items, d)` (row i - 1 = item
    index i), scores = their dot products; it trains with `loss(batch)`, or is fitted once at fit start with
    `fit(users, items)` on the TRAIN interactions (Pop, EASE), or neither (random, content): then no gradient step
    runs. A model with both (BPR-MF) gets the TRAIN interactions at fit start, then trains.

    Each validation / test query ranks the datamodule's `ranking_items(stage)` minus its `excluded` items (ties
    pessimistic, m6rec.metrics.ranking.target_ranks). `relevant="one"`: one target per query (protocol P1, leave
    one out) and the retrieval task's metrics (RankingMetrics: hr / ndcg / mrr @ `ks`); `relevant="all"`: every
    target of the query is relevant (protocol P3, a user's held-out items; AllRelevantRankingMetrics, + recall@k).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        ks: Sequence[int] = (10, 20),
        relevant: str = "one",
        chunk_size: int = 8192,
    ):
        super().__init__(optimizer, scheduler)
        if relevant not in RELEVANT:
            raise ValueError(f"task.relevant: choose from {list(RELEVANT)}, got {relevant!r}")
        ks = [int(k) for k in ks]  # a plain list, so checkpoints load with weights_only=True
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        metric = (lambda: RankingMetrics(ks)) if relevant == "one" else (lambda: AllRelevantRankingMetrics(ks))
        self.metrics = nn.ModuleDict(
            {stage: MetricCollection({"ranking": metric()}, prefix=f"{stage}/") for stage in ("val", "test")}
        )
        self.trains = any(p.requires_grad for p in model.parameters()) and hasattr(model, "loss")
        self.ranked: torch.Tensor | None = None  # item indices of this evaluation epoch's catalogue, sorted
        self.raw_ids: tuple[torch.Tensor, torch.Tensor] | None = None  # (user, item) index → raw id, for score dumps

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if not self.trains:
            return None  # fitted at fit start (or nothing to fit): Lightning skips the optimizer step
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["user"]))
        return loss

    def configure_optimizers(self) -> dict[str, Any] | None:
        return super().configure_optimizers() if self.trains else None

    def on_fit_start(self) -> None:
        if hasattr(self.model, "fit"):
            users, items = self.trainer.datamodule.train_pairs()
            self.model.fit(users.to(self.device), items.to(self.device))
        super().on_fit_start()

    def on_evaluation_start(self, datamodule) -> None:
        stage = "test" if self.trainer.testing else "val"
        self.ranked = torch.as_tensor(datamodule.ranking_items(stage), device=self.device)
        if hasattr(datamodule, "user_ids") and hasattr(datamodule, "catalogue"):
            pad = torch.zeros(1, dtype=torch.long)  # item index 0 is padding
            items = torch.cat([pad, torch.as_tensor(datamodule.catalogue.item_ids, dtype=torch.long)])
            users = torch.as_tensor(datamodule.user_ids, dtype=torch.long)
            self.raw_ids = (users.to(self.device), items.to(self.device))

    def columns(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Column of each item index in this epoch's catalogue; -1 for padding and items outside it."""
        if self.ranked is None:
            raise RuntimeError("ItemRankingSystem: no catalogue (on_evaluation_start has not run)")
        found = torch.searchsorted(self.ranked, item_ids.clamp_min(0)).clamp_max(len(self.ranked) - 1)
        return torch.where((item_ids >= 1) & (self.ranked[found] == item_ids), found, -1)

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor] | None:
        """Update the metrics; under `relevant="one"`, return each query's raw user id, raw target item id and 0-based
        rank for a score dump (None when the datamodule has no raw ids, or under `relevant="all"`)."""
        targets, excluded = self.columns(batch["targets"]), self.columns(batch["excluded"])
        if bool(((batch["targets"] >= 1) & (targets < 0)).any()):
            raise ValueError("ItemRankingSystem: a target item is not in the ranked catalogue")
        items = self.model.item_vectors()[self.ranked - 1]
        ranks = all_target_ranks(self.model.query_vectors(batch), items, targets, excluded, self.hparams.chunk_size)
        if self.hparams.relevant == "one":
            if ranks.size(1) != 1:
                raise ValueError("task.relevant=one: a query with several targets (use relevant=all)")
            ranks = ranks[:, 0]
        self.metrics[stage].update(ranks)
        if self.hparams.relevant == "one" and self.raw_ids is not None:
            users, items = self.raw_ids
            return {"user_id": users[batch["user"]], "item_id": items[batch["targets"][:, 0]], "rank": ranks}
        return None
