"""Evaluation: part-aware and global distances, exact ranking metrics, k-reciprocal re-ranking, the evaluator."""
