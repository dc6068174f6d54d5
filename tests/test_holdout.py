"""sanet.data.holdout: the validation split Optuna trials are scored on, carved from the training identities."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sanet.data.benchmarks import ImageRecord
from sanet.data.holdout import holdout_split


def _benchmark(images: dict[int, list[int]]) -> SimpleNamespace:
    """A training split: person id -> the camera of each of its images (paths sort like a real folder)."""
    train = [
        ImageRecord(f"/data/train/{pid:04d}_c{cam}_{i}.jpg", pid, cam)
        for pid, cams in images.items()
        for i, cam in enumerate(cams)
    ]
    return SimpleNamespace(name="toy", root=Path("/data"), train=sorted(train))


TOY = _benchmark({pid: [0, 0, 1, 2] for pid in range(10)} | {10: [3, 3, 3], 11: [4]})


def test_held_out_identities_never_train_and_make_a_query_gallery_protocol() -> None:
    split = holdout_split(TOY, 3, seed=0)
    held = set(split.held_out_ids)
    assert len(held) == 3 and held.isdisjoint({10, 11})  # single-camera identities cannot be validated on
    train_paths = {r.path for r in split.train}
    assert train_paths.isdisjoint(r.path for r in [*split.query, *split.gallery])
    assert {r.pid for r in split.query} == held and len(split.query) == 3  # one query per held-out identity
    assert len(split.train) + len(split.query) + len(split.gallery) == len(TOY.train)
    for query in split.query:  # every query has a true match under the camera rule
        assert any(g.pid == query.pid and g.camid != query.camid for g in split.gallery)
    assert sorted({r.pid for r in split.train}) == list(range(9)) and split.num_train_pids == 9  # relabelled
    assert split.source == "toy" and "held-out 3" in split.name and split.root == Path("/data")


def test_the_split_depends_only_on_the_seed() -> None:
    assert holdout_split(TOY, 4, seed=1) == holdout_split(TOY, 4, seed=1)
    choices = {holdout_split(TOY, 4, seed=s).held_out_ids for s in range(6)}
    assert len(choices) > 1


@pytest.mark.parametrize(
    ("num_ids", "message"),
    [(11, "10 training identities seen by two or more cameras"), (0, "must be positive")],
)
def test_impossible_splits_are_refused_with_the_numbers(num_ids: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        holdout_split(TOY, num_ids, seed=0)


def test_at_least_two_identities_must_stay_for_training() -> None:
    small = _benchmark({0: [0, 1], 1: [0, 1], 2: [0, 1]})
    assert holdout_split(small, 1, seed=0).num_train_pids == 2
    with pytest.raises(ValueError, match="leaves fewer than 2 to train on"):
        holdout_split(small, 2, seed=0)
