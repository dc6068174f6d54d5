"""The evaluator later stages use, split from the model as in fast-reid: `reset`, `process` batches, `evaluate`.

It gathers the outputs of feature extraction over the query loader followed by the gallery loader, computes the
distance the parameters choose (the part-aware distance of paper Eq. 7 by default), optionally re-ranks it, and ranks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from sanet.config import EvaluationParams, RerankParams
from sanet.contracts.parts import GLOBAL_INDEX, PARTS
from sanet.metrics.distance import DEFAULT_CHUNK_BYTES, cosine_distance, euclidean_distance, part_distance
from sanet.metrics.ranking import RankingResult, evaluate_ranking
from sanet.metrics.rerank import k_reciprocal_rerank

REPORTED_RANKS = (1, 3, 5, 10)
DISTANCES = ("part", "euclidean", "cosine")


class ReIDEvaluator:
    """Accumulates query-then-gallery outputs and computes Rank-1/3/5/10, mAP and mINP (fractions in [0, 1]).

    `process` takes a mapping with `features` ((B, P, D) part features or (B, D) global ones), `visibility` ((B, P)
    booleans; needed by the part distance), `pids` and `camids`. The first `num_query` processed images are the
    queries, the rest the gallery. `distance="part"` is paper Eq. 7; `euclidean` and `cosine` compare one vector per
    image: the global branch (`sanet.contracts.parts.PARTS[-1]`) of part features, or the given (B, D) features. After
    `evaluate`, `distmat` and `result` (a RankingResult: the whole CMC curve, per-query AP) stay available.
    """

    def __init__(
        self,
        num_query: int,
        distance: str = "part",
        max_rank: int = 50,
        rerank: RerankParams | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        if num_query < 1:
            raise ValueError(f"num_query must be at least 1, got {num_query}")
        self.num_query = num_query
        self.distance = distance
        self.max_rank = max_rank
        self.rerank = rerank if rerank is not None else RerankParams()
        self.chunk_bytes = chunk_bytes
        self.distmat: torch.Tensor | None = None
        self.result: RankingResult | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every processed batch (and the last result)."""
        self._features: list[torch.Tensor] = []
        self._visibility: list[torch.Tensor] = []
        self._pids: list[np.ndarray] = []
        self._camids: list[np.ndarray] = []
        self.distmat = None
        self.result = None

    def process(self, outputs: Mapping[str, Any]) -> None:
        """Add one batch of extraction outputs (features, visibility, pids, camids)."""
        missing = [key for key in ("features", "pids", "camids") if key not in outputs]
        if self.distance == "part" and "visibility" not in outputs:
            missing.append("visibility")
        if missing:
            raise KeyError(f"evaluator outputs lack {', '.join(missing)}")
        features = torch.as_tensor(outputs["features"]).detach()
        if self.distance == "part" and features.ndim != 3:
            raise ValueError(f"the part distance needs (B, P, D) features, got shape {tuple(features.shape)}")
        pids = np.asarray(torch.as_tensor(outputs["pids"]).cpu()).reshape(-1)
        camids = np.asarray(torch.as_tensor(outputs["camids"]).cpu()).reshape(-1)
        if not len(features) == len(pids) == len(camids):
            raise ValueError(f"batch of {len(features)} features with {len(pids)} pids and {len(camids)} camids")
        self._features.append(features)
        if "visibility" in outputs:
            self._visibility.append(torch.as_tensor(outputs["visibility"]).detach().bool())
        self._pids.append(pids)
        self._camids.append(camids)

    def _global(self, features: torch.Tensor, visibility: torch.Tensor | None) -> torch.Tensor:
        if features.ndim == 2:
            return features
        if visibility is not None and not bool(visibility[:, GLOBAL_INDEX].any()):
            raise ValueError(
                f"{self.distance} distance compares the '{PARTS[GLOBAL_INDEX]}' branch, which no image has "
                "(a model without a global branch, such as hpnet): use the part distance"
            )
        return features[:, GLOBAL_INDEX]

    def _distance_fn(self, features: torch.Tensor, visibility: torch.Tensor | None) -> Callable[..., torch.Tensor]:
        if self.distance == "part":
            assert visibility is not None
            return lambda a, b: part_distance(
                features[a], visibility[a], features[b], visibility[b], chunk_bytes=self.chunk_bytes
            )
        vectors = self._global(features, visibility)
        metric = euclidean_distance if self.distance == "euclidean" else cosine_distance
        return lambda a, b: metric(vectors[a], vectors[b], chunk_bytes=self.chunk_bytes)

    def evaluate(self) -> OrderedDict[str, float]:
        """Rank the gallery for every query; returns rank1, rank3, rank5, rank10, mAP, mINP in that order."""
        if not self._features:
            raise RuntimeError("nothing to evaluate: process() was never called")
        features = torch.cat(self._features)
        visibility = torch.cat(self._visibility).to(features.device) if self._visibility else None
        pids, camids = np.concatenate(self._pids), np.concatenate(self._camids)
        if not 0 < self.num_query < len(features):
            raise ValueError(f"{len(features)} images processed: cannot take {self.num_query} queries and a gallery")
        if visibility is not None and visibility.shape != features.shape[:2]:
            raise ValueError(f"visibility {tuple(visibility.shape)} does not match features {tuple(features.shape)}")
        queries, gallery = slice(0, self.num_query), slice(self.num_query, None)
        distance = self._distance_fn(features, visibility)
        distmat = distance(queries, gallery)
        if self.rerank.enabled:
            distmat = k_reciprocal_rerank(
                distmat,
                distance(queries, queries),
                distance(gallery, gallery),
                k1=self.rerank.k1,
                k2=self.rerank.k2,
                lambda_value=self.rerank.lambda_value,
            )
        self.distmat = distmat
        self.result = evaluate_ranking(
            distmat, pids[queries], pids[gallery], camids[queries], camids[gallery], max_rank=self.max_rank
        )
        metrics: OrderedDict[str, float] = OrderedDict()
        for k in REPORTED_RANKS:
            metrics[f"rank{k}"] = self.result.rank(min(k, len(self.result.cmc)))
        metrics["mAP"] = self.result.mAP
        metrics["mINP"] = self.result.mINP
        return metrics


def build_evaluator(params: EvaluationParams, num_query: int) -> ReIDEvaluator:
    """The evaluator `params.yaml`'s `evaluation` section describes."""
    return ReIDEvaluator(
        num_query,
        distance=params.distance,
        max_rank=params.max_rank,
        rerank=params.rerank,
        chunk_bytes=params.chunk_mib * 2**20,
    )
