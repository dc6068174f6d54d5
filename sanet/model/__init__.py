"""The SANet model (paper section 3): backbone split, AFE, MFE, assembly and ablation variants.

    model = build_model(params, num_classes)   # an nn.Module; see sanet.model.sanet for the forward contract

`import sanet.model` does not import torch: the names below load their module on first use, so that the CLI can
catch `WeightsError` without paying torch's import time on every command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sanet.model.errors import WeightsError

if TYPE_CHECKING:
    from sanet.model.afe import AFE, DOWN, KEEP, NOT_REACHED, PATHS, SCALES, UP, AFEOutput
    from sanet.model.backbone import build_backbone, imagenet_weights_file
    from sanet.model.sanet import VARIANTS, SANet, build_model

_LAZY = {
    "build_model": "sanet.model.sanet",
    "SANet": "sanet.model.sanet",
    "VARIANTS": "sanet.model.sanet",
    "AFE": "sanet.model.afe",
    "AFEOutput": "sanet.model.afe",
    "PATHS": "sanet.model.afe",
    "SCALES": "sanet.model.afe",
    "UP": "sanet.model.afe",
    "KEEP": "sanet.model.afe",
    "DOWN": "sanet.model.afe",
    "NOT_REACHED": "sanet.model.afe",
    "build_backbone": "sanet.model.backbone",
    "imagenet_weights_file": "sanet.model.backbone",
}

__all__ = [  # noqa: RUF022  (grouped by module, as _LAZY)
    "WeightsError",
    "build_model",
    "SANet",
    "VARIANTS",
    "AFE",
    "AFEOutput",
    "PATHS",
    "SCALES",
    "UP",
    "KEEP",
    "DOWN",
    "NOT_REACHED",
    "build_backbone",
    "imagenet_weights_file",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
