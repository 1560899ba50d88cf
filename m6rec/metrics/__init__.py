from m6rec.metrics.gauc import GroupAUROC
from m6rec.metrics.ranking import RankingMetrics, ranking_values, target_ranks

__all__ = ["GroupAUROC", "RankingMetrics", "ranking_values", "target_ranks"]
