"""The images the components run: the project image (`make image`) and its OpenPifPaf target for the mask step.

The default is the project's published tag; `sanet kfp compile --image REGISTRY/sanet-bench:TAG` (which sets
`SANET_IMAGE` before the components are defined) compiles the pipelines for a team's own registry.
"""

from __future__ import annotations

import os

DEFAULT_IMAGE = "ghcr.io/sanet-bench/sanet-bench:0.1.0"

IMAGE = os.environ.get("SANET_IMAGE", "").strip() or DEFAULT_IMAGE
"""Every component but the mask step: `sanet` and its locked dependencies, CUDA torch, no OpenPifPaf."""

MASKS_IMAGE = os.environ.get("SANET_MASKS_IMAGE", "").strip() or f"{IMAGE}-masks"
"""The mask step: the same image with OpenPifPaf built in (the Dockerfile's `masks` target)."""
