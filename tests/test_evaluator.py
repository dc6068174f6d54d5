"""The fast-reid style evaluator: batches in, ordered metrics out, with every distance and re-ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sanet.config import EvaluationParams, RerankParams
from sanet.contracts.parts import GLOBAL_INDEX, NUM_PARTS
from sanet.metrics.distance import part_distance
from sanet.metrics.evaluator import ReIDEvaluator, build_evaluator
from sanet.metrics.ranking import evaluate_ranking

METRIC_KEYS = ["rank1", "rank3", "rank5", "rank10", "mAP", "mINP"]


def _identity_features(pids: np.ndarray, noise: float, seed: int, dim: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(pids.max()) + 1, NUM_PARTS, dim, generator=torch.Generator().manual_seed(99))
    return centres[torch.from_numpy(pids)] + noise * torch.randn(len(pids), NUM_PARTS, dim, generator=gen)


def _feed(evaluator: ReIDEvaluator, features, visibility, pids, camids, batch: int = 7) -> None:
    for start in range(0, len(pids), batch):
        part = slice(start, start + batch)
        evaluator.process(
            {"features": features[part], "visibility": visibility[part], "pids": pids[part], "camids": camids[part]}
        )


def _benchmark(noise: float = 0.3):
    q_pids, g_pids = np.arange(12), np.repeat(np.arange(12), 3)
    pids = np.concatenate([q_pids, g_pids])
    camids = np.concatenate([np.zeros(12, dtype=int), np.ones(36, dtype=int)])
    features = _identity_features(pids, noise, seed=1)
    visibility = torch.ones(len(pids), NUM_PARTS, dtype=torch.bool)
    return features, visibility, pids, camids


def test_perfect_features_give_one_everywhere_in_order():
    features, visibility, pids, camids = _benchmark(noise=0.0)
    evaluator = ReIDEvaluator(num_query=12)
    _feed(evaluator, features, visibility, pids, camids)
    metrics = evaluator.evaluate()
    assert list(metrics) == METRIC_KEYS
    assert all(value == 1.0 for value in metrics.values())


def test_evaluator_agrees_with_the_functions_it_wraps():
    features, visibility, pids, camids = _benchmark(noise=1.5)
    visibility[::3, 1] = False
    evaluator = ReIDEvaluator(num_query=12, max_rank=20)
    _feed(evaluator, features, visibility, pids, camids)
    metrics = evaluator.evaluate()
    dist = part_distance(features[:12], visibility[:12], features[12:], visibility[12:])
    direct = evaluate_ranking(dist, pids[:12], pids[12:], camids[:12], camids[12:], max_rank=20)
    assert metrics["mAP"] == direct.mAP and metrics["rank5"] == direct.rank(5)
    assert torch.equal(evaluator.distmat, dist) and len(evaluator.result.cmc) == 20
    assert 0.0 < metrics["mAP"] < 1.0


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_global_distances_use_the_global_branch(distance):
    features, visibility, pids, camids = _benchmark(noise=0.0)
    features[:, :GLOBAL_INDEX] = torch.randn(len(pids), GLOBAL_INDEX, features.shape[2])  # parts carry only noise
    evaluator = ReIDEvaluator(num_query=12, distance=distance)
    _feed(evaluator, features, visibility, pids, camids)
    assert evaluator.evaluate()["mAP"] == 1.0


def test_global_distance_without_a_global_branch_is_refused():
    features, visibility, pids, camids = _benchmark()
    visibility[:, GLOBAL_INDEX] = False  # hpnet: four part branches, no global one
    evaluator = ReIDEvaluator(num_query=12, distance="euclidean")
    _feed(evaluator, features, visibility, pids, camids)
    with pytest.raises(ValueError, match="use the part distance"):
        evaluator.evaluate()


def test_rerank_option_changes_the_distances():
    features, visibility, pids, camids = _benchmark(noise=1.0)
    plain, reranked = ReIDEvaluator(12), ReIDEvaluator(12, rerank=RerankParams(enabled=True, k1=4, k2=2))
    for evaluator in (plain, reranked):
        _feed(evaluator, features, visibility, pids, camids)
        evaluator.evaluate()
    assert reranked.distmat.shape == plain.distmat.shape == (12, 36)
    assert not torch.allclose(reranked.distmat, plain.distmat)


def test_reset_forgets_everything():
    features, visibility, pids, camids = _benchmark()
    evaluator = ReIDEvaluator(num_query=12)
    _feed(evaluator, features, visibility, pids, camids)
    evaluator.evaluate()
    evaluator.reset()
    assert evaluator.result is None and evaluator.distmat is None
    with pytest.raises(RuntimeError, match="never called"):
        evaluator.evaluate()


def test_bad_batches_are_refused():
    evaluator = ReIDEvaluator(num_query=2)
    with pytest.raises(KeyError, match="visibility"):
        evaluator.process({"features": torch.zeros(2, 5, 4), "pids": [1, 2], "camids": [0, 0]})
    with pytest.raises(ValueError, match="needs \\(B, P, D\\)"):
        evaluator.process(
            {"features": torch.zeros(2, 4), "visibility": torch.ones(2, 5), "pids": [1, 2], "camids": [0, 0]}
        )
    with pytest.raises(ValueError, match="2 features with 3 pids"):
        evaluator.process(
            {"features": torch.zeros(2, 5, 4), "visibility": torch.ones(2, 5), "pids": [1, 2, 3], "camids": [0, 0]}
        )
    with pytest.raises(ValueError, match="distance must be one of"):
        ReIDEvaluator(num_query=2, distance="manhattan")


def test_too_few_images_for_the_queries():
    evaluator = ReIDEvaluator(num_query=4)
    evaluator.process(
        {"features": torch.zeros(4, 5, 2), "visibility": torch.ones(4, 5), "pids": [1, 2, 3, 4], "camids": [0, 0, 0, 0]}
    )
    with pytest.raises(ValueError, match="cannot take 4 queries and a gallery"):
        evaluator.evaluate()


def test_build_evaluator_follows_the_parameters():
    params = EvaluationParams(distance="cosine", max_rank=10, chunk_mib=1, rerank=RerankParams(enabled=True, k1=5))
    evaluator = build_evaluator(params, num_query=3)
    assert evaluator.distance == "cosine" and evaluator.max_rank == 10
    assert evaluator.chunk_bytes == 2**20 and evaluator.rerank.k1 == 5
