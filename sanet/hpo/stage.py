"""`sanet hpo --space NAME`, the DVC stage `hpo@NAME`: one worker's trials, then the study's summary.

The study's own steps (`sanet.hpo.study.create_study`, `sanet.hpo.worker.run_worker`,
`sanet.hpo.summary.summarise_study`) also run alone, in separate processes on separate machines (the Kubeflow study
pipeline); this entry point runs them in one process, the way the DVC stage does.
"""

from __future__ import annotations

from sanet.config import Params
from sanet.hpo.summary import SummaryResult, summarise_study
from sanet.hpo.worker import WorkerResult, run_worker

__all__ = ["run_hpo"]


def run_hpo(
    params: Params,
    space: str,
    worker: int = 0,
    trials: int | None = None,
    progress: bool = True,
    summarise: bool = True,
    device: str = "auto",
) -> tuple[WorkerResult, SummaryResult | None]:
    """Run a worker over `space`, then summarise the study (report JSON, plots, parent run)."""
    result = run_worker(params, space, worker=worker, trials=trials, progress=progress, device=device)
    summary = summarise_study(params, space) if summarise else None
    return result, summary
