"""Which scale paths the AFE takes for holistic and for partial images: the paper's Figure 4a, as counts and a plot.

In eval the adaptive AFE takes the argmax path of every cell, so each image follows one chain of cells: a scale per
layer, from the stride-16 entry cell to the output slot its last path leads to. The paper's observation (section 4.5)
is that holistic images stay on shallow, fine scales and partial images go deep. The summary gives, per group of
images, the mean stride at every step of the chain and the frequency of each whole route; the plot shows both.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanet.infra.atomic import atomic_write
from sanet.model.afe import NOT_REACHED, SCALES

__all__ = ["image_routes", "route_statistics", "routing_summary", "write_routing_note", "write_routing_plot"]

_TOP_ROUTES = 8


def image_routes(routing: torch.Tensor) -> np.ndarray:
    """(N, layers + 1) int: the scale index (0, 1, 2 for stride 8, 16, 32) each image is at, layer by layer.

    `routing` is the model's (N, layers, 3) read-out (`sanet.model.afe.routing_from`): per layer and cell the path
    taken (0 up, 1 keep, 2 down) or NOT_REACHED. The last column is the output slot the last layer's path leads to.
    """
    routing = torch.as_tensor(routing).cpu()
    if routing.ndim != 3 or routing.shape[-1] != len(SCALES):
        raise ValueError(f"routing must be (N, layers, {len(SCALES)}), got {tuple(routing.shape)}")
    reached = routing != NOT_REACHED
    if not bool((reached.sum(-1) == 1).all()):
        raise ValueError("routing of an eval pass reaches exactly one cell per layer and image (argmax paths)")
    scales = reached.int().argmax(-1)  # (N, layers)
    last_path = routing[:, -1].gather(1, scales[:, -1:]).squeeze(1)
    final = scales[:, -1] + last_path - 1
    return torch.cat([scales, final[:, None]], dim=1).numpy()


def _route_name(route: np.ndarray) -> str:
    return ">".join(str(SCALES[s]) for s in route)


def routing_summary(routing: torch.Tensor, groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Per group (name -> boolean mask over the images): image count, mean stride per step, route frequencies.

    Routes are written as strides, `16>8>8>16>32>32`; the frequencies are fractions of the group's images, the most
    frequent first (ties by name), so the summary is the same for the same routing.
    """
    routes = image_routes(routing)
    strides = np.asarray(SCALES)[routes]
    summary: dict[str, Any] = {"layers": int(routes.shape[1] - 1), "groups": {}}
    for name, mask in groups.items():
        mask = np.asarray(mask, dtype=bool)
        count = int(mask.sum())
        if count == 0:
            continue
        counts = Counter(_route_name(r) for r in routes[mask])
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        summary["groups"][name] = {
            "images": count,
            "mean_stride": [round(float(v), 4) for v in strides[mask].mean(0)],
            "share_at_stride": {str(s): [round(float(v), 4) for v in (strides[mask] == s).mean(0)] for s in SCALES},
            "routes": {route: round(n / count, 4) for route, n in ordered},
        }
    return summary


def route_statistics(routing: torch.Tensor, groups: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per group (name -> boolean mask over the images) and over all images (`all`): how varied the routes are.

    Each entry has `images`, `distinct_routes` (how many different whole routes the group's images take),
    `top_route` (the most frequent, ties by name) and `top_route_share` (its fraction of the group's images). An
    adaptive AFE whose every image takes one route (distinct 1, share 1.0) does not adapt at all; the paper's Figure
    4a expects partial and holistic images to differ. Empty groups are left out.
    """
    routes = [_route_name(r) for r in image_routes(routing)]
    masks = {"all": np.ones(len(routes), dtype=bool), **{k: np.asarray(v, dtype=bool) for k, v in groups.items()}}
    stats: dict[str, dict[str, Any]] = {}
    for name, mask in masks.items():
        counts = Counter(route for route, keep in zip(routes, mask, strict=True) if keep)
        count = int(mask.sum())
        if count == 0:
            continue
        top, top_count = min(counts.items(), key=lambda item: (-item[1], item[0]))
        stats[name] = {
            "images": count,
            "distinct_routes": len(counts),
            "top_route": top,
            "top_route_share": round(top_count / count, 6),
        }
    return stats


def write_routing_plot(path: str | Path, summary: Mapping[str, Any], title: str) -> Path:
    """Two panels: mean stride per step of the chain for each group; the most frequent routes per group.

    Drawn in matplotlib's default style whatever the user's matplotlibrc, without a version in the PNG's metadata:
    the same summary gives the same bytes (the PNG is part of a DVC output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.style

    with matplotlib.style.context("default"):
        data = _routing_png(summary, title)
    return atomic_write(path, lambda handle: handle.write(data))


def _routing_png(summary: Mapping[str, Any], title: str) -> bytes:
    import matplotlib.pyplot as plt

    groups = summary["groups"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.4]})
    steps = np.arange(summary["layers"] + 1)
    for name, group in groups.items():
        left.plot(steps, group["mean_stride"], marker="o", label=f"{name} ({group['images']} images)")
    left.set_yscale("log", base=2)
    left.set_yticks(list(SCALES), [str(s) for s in SCALES])
    left.set_xticks(steps, [f"L{i + 1}" for i in steps[:-1]] + ["out"])
    left.set_xlabel("AFE layer")
    left.set_ylabel("mean stride (8 shallow ... 32 deep)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    routes: list[str] = []
    for group in groups.values():
        routes += [r for r in list(group["routes"])[:_TOP_ROUTES] if r not in routes]
    routes = routes[: 2 * _TOP_ROUTES]
    height = 0.8 / max(len(groups), 1)
    for i, (name, group) in enumerate(groups.items()):
        y = np.arange(len(routes)) + i * height
        right.barh(y, [group["routes"].get(r, 0.0) for r in routes], height=height, label=name)
    right.set_yticks(np.arange(len(routes)) + 0.4 - height / 2, routes, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("share of the group's images")
    right.set_title("most frequent routes (strides, layer by layer)", fontsize=9)
    right.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def write_routing_note(path: str | Path, note: str, title: str) -> Path:
    """The routing figure of a variant without adaptive routing: its title and why there is no path to show.

    Every evaluation writes a routing figure, so that the stage's outputs are the same files for every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.style

    with matplotlib.style.context("default"):
        figure, axis = plt.subplots(figsize=(11, 1.6))
        axis.set_axis_off()
        axis.text(0.5, 0.5, note, ha="center", va="center", fontsize=11, wrap=True)
        figure.suptitle(title)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        plt.close(figure)
    data = buffer.getvalue()
    return atomic_write(path, lambda handle: handle.write(data))
