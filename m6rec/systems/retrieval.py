"""RetrievalSystem: two towers trained with an in-batch softmax; evaluated by exact ranking of the full catalogue."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from m6rec.metrics.ranking import RankingMetrics, chunk_size_for, target_ranks, target_scores, top_k_items
from m6rec.models.two_tower import TwoTower
from m6rec.systems.base import TaskSystem


class RetrievalSystem(TaskSystem):
    """Contrastive loss: each query's own next item against the other items of the batch (a repeat of its own item
    in the batch is masked, not a negative), cosine similarity / `temperature`. In-batch negatives are drawn in
    proportion to popularity; `logq_correction` subtracts log(item's share of training pairs) from every logit
    (Yi et al., RecSys 2019), so the softmax estimates the full-catalogue one instead of penalising popular items.

    At each validation / test epoch start every catalogue item is embedded once (datamodule.catalogue_dataloader);
    each query is then scored against all of them, its excluded (already seen) items are dropped, and the target's
    rank gives hr / ndcg / mrr @ `ks` (m6rec.metrics.ranking: exact, ties pessimistic, one pass over item chunks of
    `chunk_size` items, else sized to `ranking_memory_mb` of scores per evaluation batch and CPU thread).
    `evaluate` returns each row's rank and target score, plus its `dump_top_k` best items when that is > 0 (a score
    dump sets it).
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        pooling: str = "last",
        embedding_dim: int = 128,
        temperature: float = 0.07,
        shared_towers: bool = True,
        logq_correction: bool = True,
        ks: Sequence[int] = (10, 20),
        chunk_size: int | None = None,
        ranking_memory_mb: float = 8.0,
    ):
        super().__init__(optimizer, scheduler)
        if temperature <= 0:
            raise ValueError(f"task.temperature: must be > 0, got {temperature}")
        ks = [int(k) for k in ks]  # a plain list, so checkpoints load with weights_only=True
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"], logger=False)
        hidden = backbone.config.hidden_size
        self.model = TwoTower(backbone, hidden, embedding_dim, pooling=pooling, shared=shared_towers)
        self.metrics = nn.ModuleDict(
            {stage: MetricCollection({"ranking": RankingMetrics(ks)}, prefix=f"{stage}/") for stage in ("val", "test")}
        )
        self.item_ids: torch.Tensor | None = None  # the catalogue, sorted; set at each evaluation epoch start
        self.item_embeddings: torch.Tensor | None = None
        self.dump_top_k = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The L2-normalised query embedding of each row."""
        return self.model.embed_queries(batch["input_ids"], batch["attention_mask"])

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = self(batch)
        items = self.model.embed_items(batch["item_input_ids"], batch["item_attention_mask"])
        logits = queries @ items.T / self.hparams.temperature
        if self.hparams.logq_correction:
            logits = logits - batch["item_log_q"][None, :]
        same = batch["item_ids"][:, None] == batch["item_ids"][None, :]
        same.fill_diagonal_(False)
        return F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(logits), device=self.device))

    @torch.no_grad()
    def embed_catalogue(self, datamodule) -> None:
        """Embed every item of the datamodule's catalogue (each rank embeds all of them)."""
        ids, embeddings = [], []
        for batch in datamodule.catalogue_dataloader():
            ids.append(batch["item_ids"].to(self.device))
            mask = batch["attention_mask"].to(self.device)
            embeddings.append(self.model.embed_items(batch["input_ids"].to(self.device), mask))
        self.item_ids, self.item_embeddings = torch.cat(ids), torch.cat(embeddings)

    def rank(self, queries: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """0-based rank of each row's target item among the catalogue minus the row's excluded items."""
        columns, excluded_columns = self._columns(batch)
        return target_ranks(queries, self.item_embeddings, columns, excluded_columns, self._chunk(queries))

    def _columns(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Catalogue columns of each row's target and of its excluded items (-1 = padding)."""
        if self.item_ids is None or self.item_embeddings is None:
            raise RuntimeError("RetrievalSystem.rank: embed_catalogue() has not run")
        columns = torch.searchsorted(self.item_ids, batch["item_ids"]).clamp_max(len(self.item_ids) - 1)
        if not torch.equal(self.item_ids[columns], batch["item_ids"]):
            raise ValueError("RetrievalSystem.rank: a target item is not in the catalogue")
        excluded = batch["excluded_item_ids"]
        excluded_columns = torch.searchsorted(self.item_ids, excluded.clamp_min(0)).clamp_max(len(self.item_ids) - 1)
        return columns, torch.where(excluded >= 0, excluded_columns, -1)

    def _chunk(self, queries: torch.Tensor) -> int:
        """Catalogue items scored at a time: `chunk_size`, else sized to `ranking_memory_mb` per CPU thread."""
        budget = int(self.hparams.ranking_memory_mb * 2**20)
        return self.hparams.chunk_size or chunk_size_for(len(queries), queries.element_size(), budget, queries.device)

    def on_evaluation_start(self, datamodule) -> None:
        self.embed_catalogue(datamodule)

    def evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        queries, (columns, excluded) = self(batch), self._columns(batch)
        chunk = self._chunk(queries)
        ranks = target_ranks(queries, self.item_embeddings, columns, excluded, chunk)
        self.metrics[stage].update(ranks)
        out = {"rank": ranks, "score": target_scores(queries, self.item_embeddings, columns, chunk)}
        if self.dump_top_k > 0:
            top, scores = top_k_items(queries, self.item_embeddings, self.dump_top_k, excluded, chunk)
            out.update(top_items=self.item_ids[top], top_scores=scores)
        return out
