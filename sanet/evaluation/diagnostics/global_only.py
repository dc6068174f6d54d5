"""The ranking with the global branch alone, beside the model's own distance (the part-aware Eq. 7 by default).

SANet's claim is that its part-aware distance beats a global descriptor on partial images. Ranking the same
extracted features again with the Euclidean distance of the global branch only
(`sanet.contracts.parts.GLOBAL_INDEX`) tests that claim on every evaluation at no extra extraction cost. The `hpnet`
variant has no global branch: its stand-in is the mean of each image's visible part features (the zero vector for an
image with none visible).

The ranking is the project's own (`sanet.metrics.build_evaluator` with `distance: euclidean`), under the same
protocol, ranks and re-ranking setting as the evaluation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sanet.contracts.parts import GLOBAL_INDEX
from sanet.metrics.evaluator import build_evaluator

if TYPE_CHECKING:
    from sanet.config import EvaluationParams

__all__ = ["GLOBAL_SOURCE", "MEAN_PART_SOURCE", "global_only_features", "global_only_metrics"]

GLOBAL_SOURCE = "global branch"
MEAN_PART_SOURCE = "mean of the visible part features (the variant has no global branch)"


def global_only_features(
    features: torch.Tensor, visibility: torch.Tensor, branches: Sequence[int]
) -> tuple[torch.Tensor, str]:
    """(N, D) vectors to rank with, and where they come from (`GLOBAL_SOURCE` or `MEAN_PART_SOURCE`).

    `features` (N, 5, D) and `visibility` (N, 5) are the eval outputs; `branches` the indices in `PARTS` of the
    branches the model has (`model.parts`).
    """
    features = torch.as_tensor(features).float()
    if GLOBAL_INDEX in branches:
        return features[:, GLOBAL_INDEX], GLOBAL_SOURCE
    weights = torch.as_tensor(visibility).bool().float()
    total = (features * weights[..., None]).sum(dim=1)
    return total / weights.sum(dim=1, keepdim=True).clamp_min(1.0), MEAN_PART_SOURCE


def global_only_metrics(
    features: torch.Tensor,
    visibility: torch.Tensor,
    pids: torch.Tensor,
    camids: torch.Tensor,
    num_query: int,
    evaluation: EvaluationParams,
    branches: Sequence[int],
) -> tuple[OrderedDict[str, float], str]:
    """Rank-1/3/5/10, mAP and mINP (fractions) of the global-only Euclidean ranking, and the vectors' source.

    Queries are the first `num_query` images, as everywhere. Raises NoValidQueryError as the evaluation would.
    """
    vectors, source = global_only_features(features, visibility, branches)
    evaluator = build_evaluator(evaluation.model_copy(update={"distance": "euclidean"}), num_query=num_query)
    evaluator.process({"features": vectors, "pids": pids, "camids": camids})
    return evaluator.evaluate(), source
