"""Evaluation: part-aware and global distances, exact ranking metrics, k-reciprocal re-ranking, the evaluator."""

from sanet.metrics.distance import cosine_distance, euclidean_distance, part_distance, unshared_distance
from sanet.metrics.evaluator import ReIDEvaluator, build_evaluator
from sanet.metrics.ranking import NoValidQueryError, RankingResult, evaluate_ranking
from sanet.metrics.rerank import k_reciprocal_rerank

__all__ = [
    "NoValidQueryError",
    "RankingResult",
    "ReIDEvaluator",
    "build_evaluator",
    "cosine_distance",
    "euclidean_distance",
    "evaluate_ranking",
    "k_reciprocal_rerank",
    "part_distance",
    "unshared_distance",
]
