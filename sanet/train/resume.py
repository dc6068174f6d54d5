"""The resumable state of a training: what `<train.out_dir>/checkpoints/last.pt` holds besides the weights, how it is
written after every epoch (and on SIGTERM), and how a run picks it up again.

A checkpoint restores the model, optimiser, schedules, gradient scaler, sampler position and every process's
random-number generators, so training continues at the exact step it stopped at. It is refused when it was written
under other training parameters (their fingerprint, `sanet.engine.checkpoint.training_fingerprint`), unless the run
asks to start over (`restart_stale`, the DVC stage), which a finished checkpoint also triggers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sanet.config import Params
from sanet.engine.checkpoint import (
    STATE_FORMAT,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    training_differences,
    training_fingerprint,
    training_tree,
    unwrap,
)
from sanet.engine.errors import CheckpointError
from sanet.train.distributed import DistContext

__all__ = ["Meter", "ResumeState", "load_train_state", "rank_seed", "save_train_state"]


class Meter:
    """Running means of the loss terms over a window of steps (an epoch's means survive a resume)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, terms: dict[str, float]) -> None:
        for key, value in terms.items():
            self.sums[key] += value
        self.count += 1

    def means(self) -> dict[str, float]:
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Meter:
        meter = cls()
        if state:
            meter.sums.update(state["sums"])
            meter.count = state["count"]
        return meter


@dataclass
class ResumeState:
    """Where a training stands: the position, the history so far and the run it belongs to (a fresh run: zeros)."""

    epoch: int = 0
    step: int = 0  # steps of `epoch` already done
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    untrained: dict[str, float] | None = None
    epoch_meter: dict[str, Any] | None = None  # the running means of the interrupted epoch
    run_id: str | None = None  # the MLflow run to continue
    pipeline_run: str | None = None
    images_seen: int = 0
    train_seconds: float = 0.0
    resumed_from: Path | None = None  # the checkpoint this state came from

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], path: Path) -> ResumeState:
        return cls(
            epoch=state["epoch"],
            step=state["step"],
            global_step=state["global_step"],
            history=state["history"],
            untrained=state["untrained"],
            epoch_meter=state["epoch_meter"],
            run_id=state["run_id"],
            pipeline_run=state.get("pipeline_run"),
            images_seen=state["images_seen"],
            train_seconds=state["train_seconds"],
            resumed_from=path,
        )


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (Gumbel noise) after the shared model initialisation."""
    return int(np.random.SeedSequence([seed, rank, 0x5A4E]).generate_state(1, dtype=np.uint64)[0] % 2**63)


def load_train_state(
    path: Path,
    params: Params,
    ctx: DistContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: Any,
    restart_stale: bool,
) -> ResumeState | None:
    """Restore the checkpoint at `path` into the model, optimiser and scaler; None when there is none to resume.

    Raises:
        CheckpointError: written under other training parameters (without `restart_stale`), another learning-rate
            schedule, or an unreadable file.
    """
    if not path.is_file():
        return None
    state = load_checkpoint(path, map_location="cpu", expect=STATE_FORMAT)
    train = params.train
    if restart_stale:
        stale = None
        if state["fingerprint"] != training_fingerprint(params):
            stale = "it was written with other training parameters"
        elif state["epoch"] >= train.epochs:
            stale = "its training had finished"
        if stale is not None:
            if ctx.is_main:
                print(f"sanet train: starting over: {stale} ({path} will be replaced)")
            return None
    if state["fingerprint"] != training_fingerprint(params):
        changes = "\n  ".join(training_differences(params, state["training_params"])) or "(unknown)"
        raise CheckpointError(
            f"{path} was written with other training parameters:\n  {changes}\n"
            "restore them to resume, or start over with `sanet train --fresh` (the checkpoint is then replaced)"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:  # the factors come from params, not the file
        group["lr_factor"] = getattr(train.lr_factors, group["name"])
    if state["schedule"] != schedule.state_dict():
        raise CheckpointError(f"{path}: the learning-rate schedule differs from train.*")
    scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) == ctx.world_size:
        restore_rng(rngs[ctx.rank])
    else:  # another number of processes: the run goes on, but the random streams are new
        torch.manual_seed(rank_seed(params.seed + state["global_step"], ctx.rank))
        if ctx.is_main:
            print(
                f"sanet train: the checkpoint was written by {len(rngs)} processes, this run has "
                f"{ctx.world_size}: resuming with fresh random streams (not bit-identical)"
            )
    return ResumeState.from_checkpoint(state, path)


def save_train_state(
    path: Path,
    params: Params,
    ctx: DistContext,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: Any,
    sampler: Any,
    state: ResumeState,
    epoch: int,
    step: int,
    epoch_meter: Meter | None,
    run_id: str | None,
) -> None:
    """Write the checkpoint (rank 0, atomically) at (`epoch`, `step`); every rank takes part (its RNG state)."""
    rngs = ctx.all_gather_object(capture_rng())
    if not ctx.is_main:
        return
    checkpoint = {
        "format": STATE_FORMAT,
        "fingerprint": training_fingerprint(params),
        "training_params": training_tree(params),
        "epoch": epoch,
        "step": step,
        "global_step": state.global_step,
        "world_size": ctx.world_size,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "sampler": sampler.state_dict() | {"epoch": epoch, "start_step": step},
        "rng": rngs,
        "history": state.history,
        "untrained": state.untrained,
        "epoch_meter": epoch_meter.state_dict() if step and epoch_meter is not None else None,
        "run_id": run_id,
        "pipeline_run": state.pipeline_run,
        "images_seen": state.images_seen,
        "train_seconds": state.train_seconds,
    }
    save_checkpoint(path, checkpoint)
