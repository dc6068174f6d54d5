"""Process-group setup so that `sanet train` runs unchanged alone or under `torchrun --nproc_per_node=N`.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them the run is a single process and
no process group is created. GPUs talk over NCCL (one GPU per process, `cuda:LOCAL_RANK`), CPUs over gloo. Only rank 0
writes files and logs to MLflow (`DistContext.is_main`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from sanet.train.errors import DistributedError

__all__ = ["DistContext", "DistributedError", "init_distributed", "shutdown_distributed"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` processes and the device it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (a no-op alone)."""
        if self.distributed:
            dist.barrier()

    def all_gather_object(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order (`[value]` alone)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_object(self, value: Any, src: int = 0) -> Any:
        """Rank `src`'s `value` on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean over processes of each number (for logging)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()

    @property
    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(preference: str, local_rank: int) -> torch.device:
    """The device for `preference` (`auto`, `cpu`, `cuda`): CUDA device `local_rank` when CUDA is used."""
    if preference not in ("auto", "cpu", "cuda"):
        raise DistributedError(f"device must be auto, cpu or cuda, got {preference!r}")
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedError("device cuda was asked for, but CUDA is not available on this machine")
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but {torch.cuda.device_count()} GPUs are visible "
            "(torchrun --nproc_per_node must not exceed the GPUs of the node)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes (if any) and pick this process's device.

    The backend is NCCL when the device is a GPU, gloo otherwise. `timeout_s` bounds collective waits (rank 0
    evaluates while the others wait).
    """
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK {rank} is outside WORLD_SIZE {world_size}")
    chosen = resolve_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise DistributedError(f"WORLD_SIZE is {world_size} but {name} is not set (start with torchrun)")
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": chosen} if backend == "nccl" else {}
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s), **kwargs
        )
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=chosen)


def shutdown_distributed() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
