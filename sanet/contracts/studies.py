"""The Optuna search spaces by name: one study each (`sanet hpo --space NAME`, the DVC stage `hpo@NAME`).

What each space searches is `sanet.hpo.spaces`; the names are shared by the CLI, `dvc.yaml`'s `foreach` and the
Kubeflow study pipeline.
"""

from __future__ import annotations

SPACES: tuple[str, ...] = ("afe_layers", "afe_kernel", "triplet_weight", "joint")
"""One study per space; `joint` searches the three parameters together."""
