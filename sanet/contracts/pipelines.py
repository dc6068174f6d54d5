"""The Kubeflow pipelines by name: where each one's definition lives in the repository (`pipelines/`).

`sanet kfp compile/submit --pipeline NAME` (`sanet.cluster.kubeflow`) loads them; `pipelines/<name>.yaml` is the
compiled, checked-in YAML.
"""

from __future__ import annotations

PIPELINES: dict[str, tuple[str, str]] = {
    "benchmark": ("pipelines.benchmark", "benchmark_pipeline"),
    "hpo": ("pipelines.hpo", "hpo_pipeline"),
}
"""Name -> (module, pipeline function)."""
