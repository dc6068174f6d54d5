"""Validation on identities held out of the training split: what `sanet train` reports with `train.val_ids`, and
what an Optuna trial is scored by (`sanet.hpo.trial`). Never a test benchmark.

On a :class:`sanet.data.holdout.HoldoutSplit`, the metrics of its one-query-per-identity protocol (`rank1` ... `mINP`,
as on any benchmark) come with three more, every one ranked by the model's normal eval path (the features of
:func:`sanet.engine.features.extract_features` and the evaluator `evaluation.*` describes: the part distance of
Eq. 7 by default):

- `holistic_rank1`, `holistic_mAP`: every held-out image is a query against all held-out images. The camera rule
  (a gallery image of the query's identity and camera does not count) removes the query itself, so every image is
  ranked against the others of its identity seen by other cameras;
- `partial_rank1`, `partial_mAP`: every held-out image's partial query (a seeded vertical crop of it,
  :func:`sanet.data.holdout.partial_queries`, stretched to the input like a Partial-REID probe) against the same
  holistic images, under the same rule (which again removes the crop's own source image);
- `score` = (`holistic_mAP` + `partial_mAP`) / 2 (:func:`validation_score`): the validation score.

Taking every held-out image as a query, not one per identity, makes these means over about
`val_ids x images per identity` queries instead of `val_ids`: their sampling noise is several times smaller. The
only extra extraction is the crops (one per held-out image); the holistic features are reused.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from sanet.data.holdout import HoldoutSplit, partial_queries
from sanet.engine.features import EvaluationResult, Extracted, evaluate_benchmark, extract_with
from sanet.metrics.evaluator import build_evaluator

if TYPE_CHECKING:
    from sanet.config import Params
    from sanet.data.benchmarks import ReIDBenchmark

__all__ = ["HELD_OUT_KEYS", "SCORE", "describe_held_out", "evaluate_validation", "validation_score"]

SCORE = "score"
#: The metrics a held-out validation adds to the benchmark's own, in this order.
HELD_OUT_KEYS = ("holistic_rank1", "holistic_mAP", "partial_rank1", "partial_mAP", SCORE)


def validation_score(metrics: Mapping[str, float]) -> float:
    """The validation score of held-out metrics: the mean of the holistic and the partial mAP (fractions)."""
    return (float(metrics["holistic_mAP"]) + float(metrics["partial_mAP"])) / 2


def _rank(params: Params, queries: Extracted, gallery: Extracted) -> OrderedDict[str, float]:
    evaluator = build_evaluator(params.evaluation, num_query=len(queries.pids))
    keys = ("features", "visibility", "pids", "camids")
    evaluator.process({key: torch.cat([getattr(queries, key), getattr(gallery, key)]) for key in keys})
    return evaluator.evaluate()


def evaluate_validation(
    model: nn.Module,
    benchmark: ReIDBenchmark | HoldoutSplit,
    params: Params,
    device: torch.device,
    progress: bool = False,
) -> EvaluationResult:
    """`evaluate_benchmark`, plus the held-out protocols of the module docstring when `benchmark` is a HoldoutSplit.

    The result's `metrics` then end with HELD_OUT_KEYS; its other fields describe the one-query protocol.
    """
    result = evaluate_benchmark(model, benchmark, params, device, progress)
    if not isinstance(benchmark, HoldoutSplit):
        return result
    holistic = result.extracted  # benchmark.images order: queries, then gallery
    crops = partial_queries(benchmark)
    records, spans = [crop.record for crop in crops], [crop.span for crop in crops]
    desc = f"features {benchmark.name}, partial queries"
    partial = extract_with(model, records, params, device, progress, desc, spans)
    whole, part = _rank(params, holistic, holistic), _rank(params, partial, holistic)
    metrics = result.metrics
    metrics["holistic_rank1"], metrics["holistic_mAP"] = whole["rank1"], whole["mAP"]
    metrics["partial_rank1"], metrics["partial_mAP"] = part["rank1"], part["mAP"]
    metrics[SCORE] = validation_score(metrics)
    return result


def describe_held_out(result: EvaluationResult) -> str:
    """`; score 41.2% (holistic mAP 44.0%, partial mAP 38.4%, Rank-1 52.3%; 109 queries each)`, or "" when the
    result has no held-out metrics: the end of the trainer's validation line."""
    metrics = result.metrics
    if SCORE not in metrics:
        return ""
    queries = result.num_query + result.num_gallery
    return (
        f"; score {100 * metrics[SCORE]:.1f}% (holistic mAP {100 * metrics['holistic_mAP']:.1f}%, partial mAP "
        f"{100 * metrics['partial_mAP']:.1f}%, Rank-1 {100 * metrics['partial_rank1']:.1f}%; {queries} queries each)"
    )
