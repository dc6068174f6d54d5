"""Identity-balanced P x K batch sampler: batch structure, DDP split, determinism, resume and checkpoint state."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sanet.data.sampler import IdentityBatchSampler

K = 4


def make_pids(ids: int = 20, seed: int = 0, low: int = 1, high: int = 12) -> list[int]:
    """A shuffled training split: identity i has between low and high images (pids not contiguous)."""
    rng = np.random.default_rng(seed)
    pids = [10 * i + 3 for i in range(ids) for _ in range(rng.integers(low, high + 1))]
    return [pids[j] for j in rng.permutation(len(pids))]


def steps(sampler: IdentityBatchSampler) -> list[list[tuple[int, int]]]:
    return list(sampler)


def test_every_step_has_p_identities_of_k_images() -> None:
    pids = make_pids()
    sampler = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=1)
    batches = steps(sampler)
    assert len(batches) == len(sampler) == sampler.steps_in_epoch > 0
    for batch in batches:
        assert len(batch) == 16
        ids = [pids[index] for index, _ in batch]
        counts = Counter(ids)
        assert len(counts) == 4 and set(counts.values()) == {K}
        # the K images of an identity are consecutive
        assert all(len(set(ids[i : i + K])) == 1 for i in range(0, 16, K))
        assert all(isinstance(i, int) and isinstance(s, int) and 0 <= s < 2**63 for i, s in batch)


def test_an_epoch_uses_each_image_at_most_once_except_padding() -> None:
    pids = make_pids(low=K, high=12)  # nobody needs padding
    sampler = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=2)
    used = [index for batch in steps(sampler) for index, _ in batch]
    assert len(used) == len(set(used))
    # only the incomplete last group of each identity and the identities left over at the end go unused
    assert len(used) >= len(pids) - 20 * (K - 1) - 3 * 12


def test_identities_with_fewer_than_k_images_are_padded() -> None:
    pids = [0] * 1 + [1] * 2 + [2] * 3 + [3] * 8 + [4] * 5
    sampler = IdentityBatchSampler(pids, batch_size=8, instances_per_id=K, seed=0)
    seen = Counter()
    for epoch in range(10):
        sampler.set_epoch(epoch)
        for batch in steps(sampler):
            for i in range(0, len(batch), K):
                group = [index for index, _ in batch[i : i + K]]
                pid = pids[group[0]]
                assert all(pids[g] == pid for g in group)
                seen[pid] += 1
                if pid < 3:  # padded by drawing its own images with replacement
                    assert set(group) <= {j for j, p in enumerate(pids) if p == pid}
                    assert len(set(group)) <= pid + 1
                else:
                    assert len(set(group)) == K
    assert set(seen) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_each_step_into_disjoint_identities(world_size: int) -> None:
    pids = make_pids(ids=30)
    ranks = [
        IdentityBatchSampler(pids, batch_size=32, instances_per_id=K, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    single = IdentityBatchSampler(pids, batch_size=32, instances_per_id=K, seed=5)
    for sampler in [*ranks, single]:
        sampler.set_epoch(3)
    per_rank = [steps(s) for s in ranks]
    assert len({len(s) for s in ranks}) == 1 and len({len(b) for b in per_rank}) == 1  # same number of steps
    for step, whole in enumerate(steps(single)):
        parts = [batches[step] for batches in per_rank]
        assert all(len(part) == 32 // world_size for part in parts)
        identities = [{pids[i] for i, _ in part} for part in parts]
        assert sum(len(ids) for ids in identities) == len(set().union(*identities)) == 8  # disjoint, P in all
        # the ranks together yield the single-process global batch, seeds included
        assert [entry for part in parts for entry in part] == whole


def test_deterministic_for_a_seed_and_different_across_epochs_and_seeds() -> None:
    pids = make_pids()
    a = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=9)
    b = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=9)
    assert steps(a) == steps(b)
    first = steps(a)
    a.set_epoch(1)
    second = steps(a)
    assert [[i for i, _ in batch] for batch in second] != [[i for i, _ in batch] for batch in first]
    assert not {s for batch in second for _, s in batch} & {s for batch in first for _, s in batch}
    a.set_epoch(0)
    assert steps(a) == first  # going back to an epoch gives it again
    other = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=10)
    assert steps(other) != first
    seeds = [s for batch in first for _, s in batch]
    assert len(set(seeds)) == len(seeds)  # every item gets its own augmentation


def test_resume_yields_exactly_the_tail_of_the_epoch() -> None:
    pids = make_pids()
    sampler = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=4, rank=1, world_size=2)
    sampler.set_epoch(2)
    full = steps(sampler)
    total = sampler.steps_in_epoch
    for start in (0, 1, total // 2, total):
        resumed = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=4, rank=1, world_size=2)
        resumed.set_epoch(2, start_step=start)
        assert len(resumed) == total - start and resumed.steps_in_epoch == total
        assert steps(resumed) == full[start:]
    with pytest.raises(ValueError, match="start_step"):
        sampler.set_epoch(2, start_step=total + 1)


def test_batch_size_must_split_over_the_processes() -> None:
    with pytest.raises(ValueError, match=r"batch_size 24 / instances_per_id 4 gives 6 identities.*4 processes") as e:
        IdentityBatchSampler(make_pids(), batch_size=24, instances_per_id=K, world_size=4)
    assert "16, 32, 48" in str(e.value)  # the batch sizes that would work
    with pytest.raises(ValueError, match="multiple of instances_per_id"):
        IdentityBatchSampler(make_pids(), batch_size=18, instances_per_id=K)
    with pytest.raises(ValueError, match="rank"):
        IdentityBatchSampler(make_pids(), batch_size=16, instances_per_id=K, rank=2, world_size=2)


def test_too_few_identities_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"batch_size 64 / instances_per_id 4 needs 16 identities per step, .* has 10"):
        IdentityBatchSampler(make_pids(ids=10), batch_size=64, instances_per_id=K)


def test_state_dict_round_trip() -> None:
    pids = make_pids()
    sampler = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=3)
    sampler.set_epoch(5, start_step=2)
    state = sampler.state_dict()
    assert all(type(v) is int for v in state.values())
    assert state["seed"] == 3 and state["epoch"] == 5 and state["start_step"] == 2 and state["world_size"] == 1
    restored = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, seed=0)
    restored.load_state_dict(state)
    assert (restored.epoch, restored.start_step, len(restored)) == (5, 2, len(sampler))
    assert steps(restored) == steps(sampler)
    # another number of processes may resume: the global batches do not depend on it
    half = IdentityBatchSampler(pids, batch_size=16, instances_per_id=K, rank=0, world_size=2)
    half.load_state_dict(state)
    assert [entry for batch in steps(half) for entry in batch] == [
        entry for batch in steps(sampler) for entry in batch[:8]
    ]
    for changed in (dict(batch_size=32), dict(instances_per_id=2)):
        other = IdentityBatchSampler(pids, **{"batch_size": 16, "instances_per_id": K, **changed})
        with pytest.raises(ValueError, match="batch settings"):
            other.load_state_dict(state)
    with pytest.raises(ValueError, match="num_images"):
        IdentityBatchSampler(pids[:-1], batch_size=16, instances_per_id=K).load_state_dict(state)
