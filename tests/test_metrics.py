"""Ranking metrics, part-aware distance and re-ranking against the simple references in metrics_reference.py."""

from __future__ import annotations

import metrics_reference as ref
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanet.metrics.distance import (
    cosine_distance,
    euclidean_distance,
    part_distance,
    query_chunk_size,
    unshared_distance,
)
from sanet.metrics.ranking import NoValidQueryError, evaluate_ranking
from sanet.metrics.rerank import k_reciprocal_rerank

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def protocols(draw):
    """Random query/gallery pids, cameras and distances; integer distances make ties common."""
    num_q = draw(st.integers(1, 12))
    num_g = draw(st.integers(1, 40))
    num_ids = draw(st.integers(1, 6))
    num_cams = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tied = draw(st.booleans())
    dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32) if tied else rng.random((num_q, num_g))
    return (
        dist.astype(np.float32),
        rng.integers(0, num_ids, num_q),
        rng.integers(0, num_ids, num_g),
        rng.integers(0, num_cams, num_q),
        rng.integers(0, num_cams, num_g),
    )


@SETTINGS
@given(protocols(), st.integers(1, 12), st.sampled_from([None, 1, 64]), st.booleans())
def test_ranking_matches_the_reference(case, max_rank, chunk_rows, as_torch):
    dist, q_pids, g_pids, q_cams, g_cams = case
    expected = ref.ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    chunk = {} if chunk_rows is None else {"chunk_bytes": chunk_rows * dist.shape[1] * 4}
    inputs = [torch.from_numpy(x) for x in case] if as_torch else case
    if expected["num_valid"] == 0:
        with pytest.raises(NoValidQueryError):
            evaluate_ranking(*inputs, max_rank=max_rank, **chunk)
        return
    result = evaluate_ranking(*inputs, max_rank=max_rank, **chunk)
    assert result.num_valid_queries == expected["num_valid"]
    assert result.num_skipped_queries == len(q_pids) - expected["num_valid"]
    np.testing.assert_array_equal(result.valid, expected["valid"])
    np.testing.assert_array_equal(result.first_match_rank, expected["first"])
    np.testing.assert_allclose(result.cmc, expected["cmc"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.ap, expected["ap"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.inp, expected["inp"], rtol=0, atol=1e-12)
    assert result.mAP == pytest.approx(expected["mAP"], abs=1e-12)
    assert result.mINP == pytest.approx(expected["mINP"], abs=1e-12)
    assert len(result.cmc) == max_rank


def test_ties_are_broken_by_gallery_index():
    # Gallery: 0 wrong, 1 right, 2 wrong, 3 right, all at the same distance.
    dist = np.zeros((1, 4), dtype=np.float32)
    result = evaluate_ranking(dist, [7], [1, 7, 2, 7], [0], [1, 1, 1, 1], max_rank=4)
    assert result.first_match_rank[0] == 1
    assert result.ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result.inp[0] == pytest.approx(2 / 4)
    np.testing.assert_allclose(result.cmc, [0, 1, 1, 1])


def test_same_camera_matches_are_removed_before_ranking():
    # The closest entry is the query's pid in the query's camera: removed, so the other-camera match is rank 1.
    dist = np.array([[0.1, 0.2, 0.3]])
    result = evaluate_ranking(dist, [5], [5, 5, 9], [0], [0, 1, 1], max_rank=3)
    assert result.first_match_rank[0] == 0 and result.mAP == 1.0


def test_query_whose_only_matches_are_removed_is_skipped_and_counted():
    dist = np.array([[0.1, 0.2], [0.3, 0.1]])
    result = evaluate_ranking(dist, [1, 2], [1, 2], [0, 0], [0, 1], max_rank=2)
    assert result.num_valid_queries == 1 and result.num_skipped_queries == 1
    assert not result.valid[0] and np.isnan(result.ap[0]) and result.first_match_rank[0] == -1
    assert result.mAP == 1.0


def test_no_valid_query_is_an_error():
    with pytest.raises(NoValidQueryError, match="none of the 1 queries"):
        evaluate_ranking(np.zeros((1, 2)), [1], [1, 2], [0], [0, 0])


def test_single_match_gallery():
    dist = np.array([[0.5, 0.1, 0.9]])
    result = evaluate_ranking(dist, [3], [1, 2, 3], [0], [1, 1, 1], max_rank=5)
    assert result.first_match_rank[0] == 2
    assert result.mAP == pytest.approx(1 / 3) and result.mINP == pytest.approx(1 / 3)
    np.testing.assert_allclose(result.cmc, [0, 0, 1, 1, 1])


def test_partial_protocol_keeps_every_gallery_entry():
    """Partial benchmarks: query camera 0, gallery camera 1, so the same pid is never removed."""
    rng = np.random.default_rng(0)
    pids = np.arange(20)
    dist = rng.random((20, 20))
    result = evaluate_ranking(dist, pids, pids, np.zeros(20), np.ones(20), max_rank=20)
    assert result.num_valid_queries == 20
    expected_first = (dist < dist[pids, pids][:, None]).sum(axis=1)
    np.testing.assert_array_equal(result.first_match_rank, expected_first)


@SETTINGS
@given(protocols())
def test_perfect_distance_gives_one_everywhere(case):
    _, q_pids, g_pids, q_cams, g_cams = case
    dist = (q_pids[:, None] != g_pids[None, :]).astype(np.float32)  # every match at 0, every other entry at 1
    if not ((q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] != g_cams[None, :])).any():
        return
    result = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    assert result.mAP == 1.0 and result.mINP == 1.0
    np.testing.assert_array_equal(result.cmc, np.ones(5))


@SETTINGS
@given(protocols(), st.integers(0, 2**32 - 1))
def test_permuting_the_gallery_changes_nothing_without_ties(case, seed):
    dist, q_pids, g_pids, q_cams, g_cams = case
    if any(len(np.unique(row)) < len(row) for row in dist):
        return
    try:
        before = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    except NoValidQueryError:
        return
    perm = np.random.default_rng(seed).permutation(dist.shape[1])
    after = evaluate_ranking(dist[:, perm], q_pids, g_pids[perm], q_cams, g_cams[perm], max_rank=10)
    np.testing.assert_array_equal(before.cmc, after.cmc)
    np.testing.assert_allclose(before.ap, after.ap, atol=1e-12)
    assert before.mINP == pytest.approx(after.mINP, abs=1e-12)


def test_ranking_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(np.array([[np.nan, 0.0]]), [1], [1, 1], [0], [1, 1])
    with pytest.raises(ValueError, match="2 gallery columns but 3 gallery pids"):
        evaluate_ranking(np.zeros((1, 2)), [1], [1, 1, 1], [0], [1, 1])
    with pytest.raises(ValueError, match="distmat must be"):
        evaluate_ranking(np.zeros(3), [1], [1, 1, 1], [0], [1, 1, 1])


def test_rank_accessor():
    result = evaluate_ranking(np.array([[0.2, 0.1]]), [1], [1, 2], [0], [1, 1], max_rank=2)
    assert result.rank(1) == 0.0 and result.rank(2) == 1.0
    with pytest.raises(ValueError, match=r"rank must be in 1\.\.2"):
        result.rank(3)


@st.composite
def part_features(draw):
    num_q, num_g = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    parts, dim = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    visible = draw(st.sampled_from(["random", "all", "none"]))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(num_q, parts, dim, generator=gen) * draw(st.sampled_from([0.01, 1.0, 100.0]))
    g = torch.randn(num_g, parts, dim, generator=gen)
    if visible == "random":
        q_vis, g_vis = torch.rand(num_q, parts, generator=gen) > 0.4, torch.rand(num_g, parts, generator=gen) > 0.4
    else:
        q_vis = torch.full((num_q, parts), visible == "all")
        g_vis = torch.full((num_g, parts), visible == "all")
    return q, q_vis, g, g_vis


@SETTINGS
@given(part_features(), st.sampled_from([None, 1]))
def test_part_distance_matches_the_reference(case, chunk_rows):
    q, q_vis, g, g_vis = case
    chunk = {} if chunk_rows is None else {"chunk_bytes": chunk_rows * len(g) * 4 * 4}
    got = part_distance(q, q_vis, g, g_vis, **chunk)
    expected = ref.part_distance(q.numpy(), q_vis.numpy(), g.numpy(), g_vis.numpy())
    assert got.dtype == torch.float32 and got.shape == (len(q), len(g))
    shared = ~np.isnan(expected)
    scale = 1.0 + np.abs(expected[shared]).max(initial=0.0)
    np.testing.assert_allclose(got.numpy()[shared], expected[shared], rtol=1e-4, atol=1e-3 * scale)
    unshared = unshared_distance(q, g)
    assert (got.numpy()[~shared] == unshared).all()
    assert (got.numpy()[shared] < unshared).all()


def test_part_distance_needs_matching_shapes():
    q, g = torch.zeros(2, 5, 4), torch.zeros(3, 4, 4)
    with pytest.raises(ValueError, match="differ"):
        part_distance(q, torch.ones(2, 5), g, torch.ones(3, 4))
    with pytest.raises(ValueError, match="visibility must be"):
        part_distance(q, torch.ones(2, 4), torch.zeros(3, 5, 4), torch.ones(3, 5))


def test_part_distance_chunks_bound_memory():
    """Market-1501 scale: one chunk's temporaries stay within the budget (the output is the only G-sized rest)."""
    rows = query_chunk_size(15913, chunk_bytes=256 * 2**20)
    assert 2 * rows * 15913 * 4 <= 256 * 2**20
    assert rows >= 256  # chunks stay large enough for the matrix products to run at full speed


def test_global_distances_match_numpy():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=(9, 7)).astype(np.float32)
    expected = np.linalg.norm(q[:, None] - g[None], axis=2)
    np.testing.assert_allclose(
        euclidean_distance(torch.from_numpy(q), torch.from_numpy(g), chunk_bytes=40), expected, rtol=1e-4, atol=1e-4
    )
    cos = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    np.testing.assert_allclose(cosine_distance(torch.from_numpy(q), torch.from_numpy(g)), cos, rtol=1e-4, atol=1e-5)


def _random_distances(seed, num_q, num_g, dim=4):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_q + num_g, dim, generator=gen)
    q, g = feats[:num_q], feats[num_q:]
    return euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**16),
    st.integers(1, 8),
    st.integers(2, 25),
    st.integers(1, 8),
    st.integers(1, 4),
    st.sampled_from([0.0, 0.3, 1.0]),
)
def test_rerank_matches_the_reference(seed, num_q, num_g, k1, k2, lambda_value):
    q_g, q_q, g_g = _random_distances(seed, num_q, num_g)
    n = num_q + num_g
    k1 = min(k1, n - 1)
    got = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=min(k2, n), lambda_value=lambda_value, query_rows=3)
    expected = ref.k_reciprocal(
        q_g.double().numpy(), q_q.double().numpy(), g_g.double().numpy(), k1, min(k2, n), lambda_value
    )
    assert got.shape == (num_q, num_g) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_rerank_improves_a_noisy_ranking():
    """Clusters of five views per identity: re-ranking with the paper's settings must not lower mAP."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 16, generator=gen) * 2
    views = centres.repeat_interleave(5, dim=0) + torch.randn(150, 16, generator=gen) * 1.5
    pids = np.repeat(np.arange(30), 5)
    is_query = np.tile([True, False, False, False, False], 30)
    q, g = views[is_query], views[~is_query]
    q_pids, g_pids = pids[is_query], pids[~is_query]
    cams_q, cams_g = np.zeros(len(q)), np.ones(len(g))
    plain = evaluate_ranking(euclidean_distance(q, g), q_pids, g_pids, cams_q, cams_g)
    reranked = k_reciprocal_rerank(
        euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g), k1=6, k2=3
    )
    better = evaluate_ranking(reranked, q_pids, g_pids, cams_q, cams_g)
    assert better.mAP > plain.mAP


def test_rerank_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="re-ranking needs"):
        k_reciprocal_rerank(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 2))


def test_the_torch_sorting_path_used_on_gpus_gives_the_same_result(monkeypatch):
    """On a GPU the rows are sorted by torch instead of numpy; run that path on the CPU and compare."""
    from sanet.metrics import ranking

    rng = np.random.default_rng(3)
    dist = rng.integers(0, 6, (40, 90)).astype(np.float32)  # many ties
    args = (dist, rng.integers(0, 8, 40), rng.integers(0, 8, 90), rng.integers(0, 3, 40), rng.integers(0, 3, 90))
    numpy_path = evaluate_ranking(*args, chunk_bytes=7 * 90 * 4)

    class TorchSorter(ranking._RowSorter):
        def __init__(self, dist: torch.Tensor, rows: int) -> None:
            super().__init__(dist, rows)
            self.cpu = False

    monkeypatch.setattr(ranking, "_RowSorter", TorchSorter)
    torch_path = evaluate_ranking(*args, chunk_bytes=7 * 90 * 4)
    np.testing.assert_array_equal(numpy_path.ap, torch_path.ap)
    np.testing.assert_array_equal(numpy_path.cmc, torch_path.cmc)
    expected = ref.ranking(*args, max_rank=50)
    np.testing.assert_allclose(torch_path.ap, expected["ap"], atol=1e-12)
