"""`sanet hpo --space NAME`, the DVC stage `hpo@NAME`: create the study, run one worker's trials, summarise.

The three steps (`sanet.hpo.study.create_study`, `sanet.hpo.worker.run_worker`, `sanet.hpo.summary.summarise_study`)
also run alone (`--step`), in separate processes on separate machines sharing one storage (the Kubeflow study
pipeline); with `step="all"` this entry point runs them in one process, the way the DVC stage does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sanet.config import Params
from sanet.hpo.study import create_study
from sanet.hpo.summary import SummaryResult, summarise_study
from sanet.hpo.worker import WorkerResult, run_worker

__all__ = ["STEPS", "run_hpo"]

STEPS: tuple[str, ...] = ("all", "create", "worker", "summarise")


def run_hpo(
    params: Params,
    space: str,
    worker: int = 0,
    trials: int | None = None,
    progress: bool = True,
    summarise: bool = True,
    device: str = "auto",
    step: str = "all",
    on_step: Callable[[str, Any], None] | None = None,
) -> tuple[WorkerResult | None, SummaryResult | None]:
    """Run `step` of the study over `space` (all three by default); returns the worker's and the summary's results.

    Args:
        worker, trials, progress, device: the worker's (`run_worker`).
        summarise: summarise after the worker (the report JSON, plots, parent run) when `step` is `all`.
        step: `all`, or one of `create`, `worker`, `summarise`.
        on_step: called with (step, its result) as each step finishes (the CLI prints from it).
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; one of {', '.join(STEPS)}")

    def done(name: str, result: Any) -> Any:
        if on_step is not None:
            on_step(name, result)
        return result

    result: WorkerResult | None = None
    summary: SummaryResult | None = None
    if step in ("create", "all"):
        done("create", create_study(params, space))
    if step in ("worker", "all"):
        result = done(
            "worker", run_worker(params, space, worker=worker, trials=trials, progress=progress, device=device)
        )
    if step == "summarise" or (step == "all" and summarise):
        summary = done("summarise", summarise_study(params, space))
    return result, summary
