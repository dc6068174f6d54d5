"""A validation split carved out of a benchmark's training identities (`train.val_ids`).

Hyperparameter searches must never be scored on the test benchmarks: a setting picked on them would report an
optimistic number. This module holds out `num_ids` training identities, seen by at least two cameras, and turns their
images into a small query/gallery protocol of the benchmark's own kind: one query image per held-out identity, every
other image of the held-out identities in the gallery, and the camera rule of the evaluator (a gallery image of the
query's identity and camera does not count). The remaining identities are the training split, relabelled `0..N-1`.
The choice depends only on the seed, so every trial and every worker of a study scores on the same split.

Besides that one-query protocol, :func:`partial_queries` turns every held-out image into a **partial query**, the kind
of probe the method exists for: a vertical extent of it (:func:`sanet.data.partial.sample_extent`, a fraction
``PARTIAL_EXTENT`` of its height, starting at the top row with probability ``PARTIAL_FROM_TOP``), drawn from a
``torch.Generator`` seeded with ``(seed, image index)``. The crops live in memory only (a record and its rows: nothing
is written under the data root) and are stretched to the input size by the test transform, as every partial
benchmark protocol stretches its probes. They need no part masks or labels beyond the record's identity and camera.
:mod:`sanet.train.validation` ranks them against the holistic held-out images under the same camera rule (which also
removes the crop's own source image from its gallery).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sanet.data.benchmarks import CorruptImageError, ImageRecord, ReIDBenchmark

if TYPE_CHECKING:  # torch is imported where the crops are drawn, not by the split alone
    from sanet.data.partial import RowSpan

__all__ = ["PARTIAL_EXTENT", "PARTIAL_FROM_TOP", "HoldoutSplit", "PartialQuery", "holdout_split", "partial_queries"]

#: Fraction of a held-out image's height a partial query keeps (Partial-REID probes are mostly upper bodies).
PARTIAL_EXTENT = (0.35, 0.8)
#: Probability that a partial query starts at the image's top row (elsewhere: anywhere it fits).
PARTIAL_FROM_TOP = 0.8


class PartialQuery(NamedTuple):
    """A held-out image seen partially: rows ``span`` of ``record``'s image (identity and camera of the record)."""

    record: ImageRecord
    span: RowSpan


@dataclass(frozen=True)
class HoldoutSplit:
    """Training identities minus the held-out ones (`train`), and the held-out ones as `query` / `gallery`.

    Quacks like a `ReIDBenchmark` where the trainer and the evaluator look (`name`, `root`, `train`, `query`,
    `gallery`, `num_train_pids`).
    """

    name: str
    root: Path
    source: str  # the benchmark the split was carved from
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    held_out_ids: tuple[int, ...]  # training labels of the held-out identities (before relabelling the rest)
    seed: int = 0  # the seed of the choice, which also seeds the partial queries

    @property
    def num_train_pids(self) -> int:
        """Identities left for training (the classifier's size)."""
        return len({r.pid for r in self.train})

    @property
    def images(self) -> list[ImageRecord]:
        """Every held-out image, queries then gallery (the order features are extracted in)."""
        return [*self.query, *self.gallery]


def holdout_split(benchmark: ReIDBenchmark, num_ids: int, seed: int) -> HoldoutSplit:
    """Hold out `num_ids` training identities of `benchmark` as a validation query/gallery (module docstring).

    Raises:
        ValueError: fewer than `num_ids` identities are seen by two cameras, or fewer than two would stay for
            training; the message gives the numbers.
    """
    if num_ids < 1:
        raise ValueError(f"num_ids must be positive, got {num_ids}")
    by_id: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in benchmark.train:
        by_id[record.pid].append(record)
    eligible = sorted(pid for pid, records in by_id.items() if len({r.camid for r in records}) >= 2)
    if len(eligible) < num_ids:
        raise ValueError(
            f"{benchmark.name} has {len(eligible)} training identities seen by two or more cameras; "
            f"{num_ids} cannot be held out"
        )
    if len(by_id) - num_ids < 2:
        raise ValueError(
            f"{benchmark.name} has {len(by_id)} training identities; holding out {num_ids} leaves fewer than 2 "
            "to train on"
        )
    rng = random.Random(seed)
    held = sorted(rng.sample(eligible, num_ids))
    held_set = set(held)
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for pid in held:
        records = sorted(by_id[pid])
        chosen = rng.choice(records)
        query.append(chosen)
        gallery.extend(r for r in records if r != chosen)
    rest = sorted(r for r in benchmark.train if r.pid not in held_set)
    new_pid = {pid: i for i, pid in enumerate(sorted({r.pid for r in rest}))}
    return HoldoutSplit(
        name=f"{benchmark.name} (held-out {num_ids} ids)",
        root=benchmark.root,
        source=benchmark.name,
        train=[r._replace(pid=new_pid[r.pid]) for r in rest],
        query=sorted(query),
        gallery=sorted(gallery),
        held_out_ids=tuple(held),
        seed=seed,
    )


def _image_rows(path: str) -> int:
    """The height of an image file, from its header (the pixels are decoded later, by the dataset)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(image.size[1])
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"cannot read the image\n  {path}\nreason: {exc or type(exc).__name__}") from exc


def partial_queries(split: HoldoutSplit) -> list[PartialQuery]:
    """One partial query per held-out image, in `split.images` order (module docstring); the same in every process.

    Reads the image headers (for their heights); raises CorruptImageError for an unreadable file.
    """
    import torch

    from sanet.data.dataset import item_seed
    from sanet.data.partial import sample_extent

    low, high = PARTIAL_EXTENT
    queries = []
    for index, record in enumerate(split.images):
        generator = torch.Generator().manual_seed(item_seed(split.seed, index))
        span = sample_extent(generator, _image_rows(record.path), low, high, PARTIAL_FROM_TOP)
        queries.append(PartialQuery(record, span))
    return queries
