"""All diagnostics of one evaluation together: `diagnostics.json`'s content and the flat numbers for `metrics.json`.

`compute_diagnostics` takes what the evaluation already has (the extraction, the ranking, the model's branches and
the AFE meter) plus the mask store for the labels, and returns a JSON-ready dict (floats rounded to 6 digits, no
timestamps or timings, so the same model and data give the same file). A diagnostic that cannot be computed (no
mask store for the benchmark, a variant without an AFE or without adaptive routing) is present with
`"available": false` and a `note` saying why, never a crash. `headline_metrics` flattens the numbers a dashboard
wants into `metrics.json` keys; the ones that are not available are left out (MLflow and DVC take numbers only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sanet.contracts.parts import PARTS
from sanet.evaluation.diagnostics.afe import AFEShareMeter
from sanet.evaluation.diagnostics.floor import DEFAULT_BINS, chance_rank1, colour_histogram_floor
from sanet.evaluation.diagnostics.global_only import global_only_metrics
from sanet.evaluation.diagnostics.masks import mask_variation
from sanet.evaluation.diagnostics.visibility import label_visibility, visibility_accuracy
from sanet.masks.errors import MasksError
from sanet.masks.mask_files import MaskStore

if TYPE_CHECKING:
    from sanet.config import EvaluationParams
    from sanet.data.benchmarks import ImageRecord
    from sanet.engine.features import EvaluationResult

__all__ = ["ROLES", "compute_diagnostics", "group_names", "headline_metrics"]

ROLES: tuple[str, ...] = ("query", "gallery")
_FLOOR_METHOD = "joint RGB histogram of the person pixels (label global mask), L1-normalised; Hellinger distance"


def group_names(partial: bool) -> dict[str, str]:
    """Role (query, gallery) -> the group name `routing.json` uses for it (partial vs holistic images)."""
    if partial:
        return {"query": "partial (query)", "gallery": "holistic (gallery)"}
    return {"query": "holistic query", "gallery": "holistic gallery"}


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def _metrics(metrics: Any) -> dict[str, float | None]:
    return {key: _round(float(value)) for key, value in metrics.items()}


def _missing_masks(exc: MasksError, out_dir: str | object) -> str:
    first = str(exc).splitlines()[0]
    return f"no label masks for this benchmark in {out_dir} ({first}); run `sanet masks` (or `dvc repro masks`)"


def _visibility(
    result: EvaluationResult,
    label: np.ndarray | None,
    branches: Sequence[int],
    note: str | None,
) -> dict[str, Any]:
    if label is None:
        return {"available": False, "note": note}
    predicted = result.extracted.visibility.numpy().astype(bool)
    split = slice(0, result.num_query), slice(result.num_query, None)
    out: dict[str, Any] = {"available": True}
    for role, rows in zip(ROLES, split, strict=True):
        out[role] = visibility_accuracy(predicted[rows], label[rows], branches)
    return out


def _masks(result: EvaluationResult, branches: Sequence[int]) -> dict[str, Any]:
    probs = result.extracted.mask_probs
    if probs is None:
        return {"available": False, "note": "the extraction kept no mask probabilities"}
    out: dict[str, Any] = {"available": True, "size": [int(probs.shape[2]), int(probs.shape[3])]}
    out["all"] = mask_variation(probs, branches)
    out["query"] = mask_variation(probs[: result.num_query], branches)
    out["gallery"] = mask_variation(probs[result.num_query :], branches)
    return out


def _routing(result: EvaluationResult, partial: bool, variant: str) -> dict[str, Any]:
    from sanet.evaluation.routing import route_statistics, routing_summary

    routing = result.extracted.routing
    if routing is None:
        return {"adaptive": False, "note": f"the {variant} variant has no adaptive routing (no per-image path)"}
    is_query = np.arange(len(routing)) < result.num_query
    names = group_names(partial)
    masks = {names["query"]: is_query, names["gallery"]: ~is_query}
    stats = route_statistics(routing, masks)
    shares = routing_summary(routing, masks)["groups"]
    groups = {
        name: {"role": role, **stats[name], "routes": shares[name]["routes"]}
        for role, name in names.items()
        if name in stats
    }
    return {"adaptive": True, "all": stats["all"], "groups": groups}


def _afe(afe: AFEShareMeter | None, variant: str) -> dict[str, Any]:
    if afe is None or not afe.available:
        return {"available": False, "share": None, "note": f"the {variant} variant has no AFE"}
    share = afe.share()
    if share is None:
        return {"available": False, "share": None, "note": "no image passed through the AFE"}
    return {"available": True, "share": share, "images": afe.images}


def compute_diagnostics(
    result: EvaluationResult,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    store: MaskStore,
    evaluation: EvaluationParams,
    branches: Sequence[int],
    partial: bool,
    variant: str,
    afe: AFEShareMeter | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Every diagnostic of one evaluation (see the package docstring), as a JSON-ready dict.

    Args:
        result: the evaluation (`sanet.engine.features.evaluate_benchmark`): queries first, then the gallery.
        query, gallery: the benchmark's records, in the order they were extracted.
        store: the mask store (label visibility and the floor's person pixels).
        evaluation: the evaluation settings (the global-only ranking uses the same ranks and re-ranking).
        branches: indices in `PARTS` of the model's branches (`model.parts`); other parts are not diagnosed.
        partial: whether the queries are partial images (names the routing groups as `routing.json` does).
        variant: the model variant, for the notes.
        afe: the meter that watched the AFE during extraction, or None.
    """
    if len(query) != result.num_query or len(gallery) != result.num_gallery:
        raise ValueError("the records do not match the evaluation's query and gallery counts")
    extracted = result.extracted
    records = [*query, *gallery]
    label: np.ndarray | None = None
    note: str | None = None
    try:
        label = label_visibility(store, [r.path for r in records])
    except MasksError as exc:
        note = _missing_masks(exc, store.out_dir)

    global_only, source = global_only_metrics(
        extracted.features,
        extracted.visibility,
        extracted.pids,
        extracted.camids,
        result.num_query,
        evaluation,
        branches,
    )
    floor: dict[str, Any]
    if label is None:
        floor = {"available": False, "note": note}
    else:
        found = colour_histogram_floor(query, gallery, store, DEFAULT_BINS, evaluation.max_rank, progress)
        floor = {
            "available": True,
            "method": _FLOOR_METHOD,
            "distance": found.distance,
            "bins": found.bins,
            "whole_image_fallbacks": found.fallbacks,
            **_metrics(found.metrics),
        }
    return {
        "benchmark": result.benchmark,
        "variant": variant,
        "num_query": result.num_query,
        "num_gallery": result.num_gallery,
        "branches": [PARTS[i] for i in branches],
        "visibility": _visibility(result, label, branches, note),
        "masks": _masks(result, branches),
        "routing": _routing(result, partial, variant),
        "afe": _afe(afe, variant),
        "ranking": {
            "model": {"distance": evaluation.distance, "rerank": evaluation.rerank.enabled, **_metrics(result.metrics)},
            "global_only": {"distance": "euclidean", "features": source, **_metrics(global_only)},
        },
        "floor": floor,
        "chance_rank1": _round(
            chance_rank1(
                [r.pid for r in query], [r.pid for r in gallery], [r.camid for r in query], [r.camid for r in gallery]
            )
        ),
    }


def headline_metrics(diagnostics: dict[str, Any]) -> dict[str, float]:
    """The flat numbers for `metrics.json` (and MLflow) from `compute_diagnostics`' dict; unavailable ones left out.

    Keys: `vis_acc_query/<part>`, `vis_acc_gallery/<part>`, `mask_std/<part>`, `mask_mean/<part>` (parts the model
    has a branch for), `routes_distinct`, `routes_distinct_query`, `routes_distinct_gallery`,
    `routes_top_share_query`, `routes_top_share_gallery`, `afe_share`, `global_only_rank1`, `global_only_mAP`,
    `floor_rank1`, `floor_mAP`, `chance_rank1`.
    """
    out: dict[str, float | None] = {}
    visibility = diagnostics["visibility"]
    if visibility.get("available"):
        for role in ROLES:
            for part, entry in visibility[role].items():
                out[f"vis_acc_{role}/{part}"] = entry["accuracy"]
    masks = diagnostics["masks"]
    if masks.get("available"):
        for part, entry in masks["all"].items():
            out[f"mask_std/{part}"] = entry["std"]
        for part, entry in masks["all"].items():
            out[f"mask_mean/{part}"] = entry["mean"]
    routing = diagnostics["routing"]
    if routing.get("adaptive"):
        out["routes_distinct"] = routing["all"]["distinct_routes"]
        for group in routing["groups"].values():
            out[f"routes_distinct_{group['role']}"] = group["distinct_routes"]
        for group in routing["groups"].values():
            out[f"routes_top_share_{group['role']}"] = group["top_route_share"]
    out["afe_share"] = diagnostics["afe"]["share"]
    out["global_only_rank1"] = diagnostics["ranking"]["global_only"]["rank1"]
    out["global_only_mAP"] = diagnostics["ranking"]["global_only"]["mAP"]
    floor = diagnostics["floor"]
    if floor.get("available"):
        out["floor_rank1"] = floor["rank1"]
        out["floor_mAP"] = floor["mAP"]
    out["chance_rank1"] = diagnostics["chance_rank1"]
    return {key: value for key, value in out.items() if value is not None}
