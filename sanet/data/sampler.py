"""Identity-balanced P x K batches for the triplet loss, split over DDP processes, resumable mid-epoch.

A batch-hard triplet loss needs several images of each identity in a batch: every step takes P identities and K
images of each (paper: 16 x 4 = 64). :class:`IdentityBatchSampler` plans an epoch the way torchreid's
``RandomIdentitySampler`` does: each identity's images are shuffled (an identity with fewer than K images is
topped up by drawing its images with replacement), cut into groups of K, and steps take one group from each of P
identities drawn at random among those that still have groups, until fewer than P do.

Distributed training: the plan depends on the seed and the epoch only, so every process computes the same one
without communicating, and every process yields the same number of steps (DDP hangs otherwise). ``batch_size`` is
the global batch; within a step, process ``r`` of ``W`` takes identities ``[r P / W, (r + 1) P / W)``, so an
identity is never split between processes (each process's triplet loss sees all K images of its identities).
The global batches are therefore the same for any number of processes that divides P.

Every entry is ``(dataset_index, sample_seed)``; the seed, a function of (seed, epoch, step, position in the global
batch), drives that item's augmentation (:class:`sanet.data.dataset.TrainDataset`), so batches do not depend on
the number of DataLoader workers, and ``set_epoch(epoch, start_step)`` resumes an interrupted epoch with exactly
the steps, images and augmentations it had left.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = ["IdentityBatchSampler"]

_MAX_SEED = np.iinfo(np.int64).max  # sample seeds are non-negative 63-bit ints


class IdentityBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this process's share of P x K identity-balanced batches as lists of ``(index, sample_seed)``.

    Args:
        pids: the person id of every dataset item, in dataset order.
        batch_size: the global batch (all processes together), a multiple of ``instances_per_id``.
        instances_per_id: K, images per identity in a batch.
        seed: fixes every epoch's plan and augmentation seeds (together with the epoch).
        rank, world_size: this process and the number of processes.

    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``); iterating again without it repeats
    the same steps. Use as ``DataLoader(dataset, batch_sampler=sampler)``.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        instances_per_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if instances_per_id < 1 or batch_size < instances_per_id or batch_size % instances_per_id:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of instances_per_id ({instances_per_id})"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size {world_size})")
        ids_per_step = batch_size // instances_per_id
        if ids_per_step % world_size:
            k = instances_per_id
            working = ", ".join(str(world_size * k * m) for m in range(1, 5))
            raise ValueError(
                f"batch_size {batch_size} / instances_per_id {k} gives {ids_per_step} identities per step, which do "
                f"not split evenly over {world_size} processes (an identity is never split between processes); "
                f"use a batch_size that is a multiple of world_size x instances_per_id = {world_size * k}: "
                f"{working}, ..."
            )
        unique, inverse = np.unique(np.asarray(pids, dtype=np.int64), return_inverse=True)
        if len(unique) < ids_per_step:
            raise ValueError(
                f"batch_size {batch_size} / instances_per_id {instances_per_id} needs {ids_per_step} identities per "
                f"step, the training split has {len(unique)}"
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(unique)))[:-1]
        self._images: list[np.ndarray] = np.split(order, bounds)  # dataset indices of each identity, ascending
        self.num_images = len(inverse)
        self.batch_size = batch_size
        self.instances_per_id = instances_per_id
        self.ids_per_step = ids_per_step
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0
        self._plan_epoch: int | None = None
        self._plan = np.empty((0, ids_per_step, instances_per_id), dtype=np.int64)
        self._seeds = np.empty((0, batch_size), dtype=np.int64)

    # ---- the epoch plan ----------------------------------------------------------------------------------------

    @property
    def num_identities(self) -> int:
        return len(self._images)

    def _build(self, epoch: int) -> None:
        """Plan ``epoch``: (steps, P, K) dataset indices and (steps, batch_size) sample seeds, as on every rank."""
        plan_seq, seed_seq = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        rng = np.random.default_rng(plan_seq)
        k = self.instances_per_id
        groups: list[np.ndarray] = []
        for images in self._images:
            shuffled = rng.permutation(images) if len(images) >= k else rng.choice(images, size=k, replace=True)
            usable = len(shuffled) // k * k
            groups.append(shuffled[:usable].reshape(-1, k))
        remaining = np.array([len(g) for g in groups])
        taken = np.zeros_like(remaining)
        steps: list[np.ndarray] = []
        while True:
            available = np.flatnonzero(taken < remaining)
            if len(available) < self.ids_per_step:
                break
            chosen = rng.choice(available, size=self.ids_per_step, replace=False)
            steps.append(np.stack([groups[i][taken[i]] for i in chosen]))
            taken[chosen] += 1
        self._plan = np.stack(steps) if steps else self._plan[:0]
        self._seeds = np.random.default_rng(seed_seq).integers(
            0, _MAX_SEED, size=(len(self._plan), self.batch_size), dtype=np.int64, endpoint=True
        )
        self._plan_epoch = epoch

    def _ensure_plan(self) -> None:
        if self._plan_epoch != self.epoch:
            self._build(self.epoch)

    @property
    def steps_in_epoch(self) -> int:
        """Steps of the current epoch in all (the same on every rank; may differ slightly between epochs)."""
        self._ensure_plan()
        return len(self._plan)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Choose the epoch to yield, skipping its first ``start_step`` steps (to resume an interrupted epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        total = self.steps_in_epoch
        if not 0 <= start_step <= total:
            raise ValueError(f"start_step {start_step} is outside epoch {epoch}, which has {total} steps")
        self.start_step = start_step

    def __len__(self) -> int:
        """Steps left in the current epoch (its steps minus ``start_step``)."""
        return self.steps_in_epoch - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        self._ensure_plan()
        plan, seeds = self._plan, self._seeds  # a later set_epoch does not disturb a running epoch
        share = self.ids_per_step // self.world_size
        ids = slice(self.rank * share, (self.rank + 1) * share)
        columns = slice(ids.start * self.instances_per_id, ids.stop * self.instances_per_id)
        for step in range(self.start_step, len(plan)):
            indices = plan[step, ids].reshape(-1).tolist()
            yield list(zip(indices, seeds[step, columns].tolist(), strict=True))

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        """The sampler's position and settings, as plain ints (for a checkpoint)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "start_step": self.start_step,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "instances_per_id": self.instances_per_id,
            "num_images": self.num_images,
            "num_identities": self.num_identities,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the seed and position of :meth:`state_dict`.

        The batch settings and the training split must match (otherwise the plan would differ); the number of
        processes may change, since the global batches do not depend on it.
        """
        keys = ("batch_size", "instances_per_id", "num_images", "num_identities")
        differs = [f"{k} {state.get(k)} (now {getattr(self, k)})" for k in keys if state.get(k) != getattr(self, k)]
        if differs:
            raise ValueError("the sampler state was saved with other batch settings or data: " + ", ".join(differs))
        self.seed = int(state["seed"])
        self._plan_epoch = None  # the seed may have changed
        self.set_epoch(int(state["epoch"]), int(state["start_step"]))
