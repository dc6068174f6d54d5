"""CMC, mAP and mINP from a query-gallery distance matrix, exactly and without sorting the gallery.

The standard protocol (Market-1501, DukeMTMC-reID; torchreid's and fast-reid's definition), for every query:

* gallery entries with the query's pid *and* camera are removed (the same person seen by the same camera is too easy
  a match); everything else stays, distractors (pid 0) included;
* the remaining gallery is ranked by distance, lower first; ties are broken by gallery index, stably (the order a
  stable sort gives);
* a query with no remaining match is skipped, and counted in `num_skipped_queries`;
* CMC@k is 1 if a match is within the first k; AP is the mean of the precision at the rank of every match
  (non-interpolated); INP is (number of matches) / (rank of the last match) (Ye et al., TPAMI 2021).

The partial benchmarks use the same function through their camera ids (queries camera 0, gallery camera 1), so
nothing of the gallery is removed for them.

Only the ranks of the matches are needed, not the order of the whole gallery. A match's rank is the number of
gallery entries strictly closer than it minus the removed same-camera entries strictly closer. The gallery is grouped
by pid once, so a query's few same-pid entries are found without a pass over the gallery; each row's distances are
sorted as plain values (numpy's vectorised sort, several times faster than an argsort; torch's on a GPU) and every
match is located in its row by binary search. A row in which another entry ties with a match (rare with real
features, common in tests) is ranked by a stable argsort instead, so the result is exact either way.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from sanet.infra.errors import SanetError
from sanet.metrics.distance import DEFAULT_CHUNK_BYTES, query_chunk_size


class NoValidQueryError(SanetError, ValueError):
    """Raised when no query has a match left in the gallery: the metrics would be undefined."""


@dataclass(frozen=True)
class RankingResult:
    """Ranking metrics of one query-gallery evaluation; fractions in [0, 1].

    `cmc[k]` is the fraction of valid queries with a match within the first k + 1 gallery entries. `ap`, `inp` and
    `first_match_rank` (0-based) have one entry per query, NaN (or -1) for the skipped ones that `valid` marks False.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    ap: np.ndarray
    inp: np.ndarray
    first_match_rank: np.ndarray
    valid: np.ndarray
    num_valid_queries: int
    num_skipped_queries: int
    extra: dict[str, float] = field(default_factory=dict)

    def rank(self, k: int) -> float:
        """CMC at rank k (1-based): the fraction of valid queries matched within the first k entries."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank must be in 1..{len(self.cmc)}, got {k}")
        return float(self.cmc[k - 1])


def _to_numpy_1d(x: object, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(array.shape)}")
    return array


def evaluate_ranking(
    distmat: np.ndarray | torch.Tensor,
    q_pids: np.ndarray | torch.Tensor,
    g_pids: np.ndarray | torch.Tensor,
    q_camids: np.ndarray | torch.Tensor,
    g_camids: np.ndarray | torch.Tensor,
    max_rank: int = 50,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> RankingResult:
    """CMC (length `max_rank`), mAP and mINP of a (Q, G) distance matrix (lower is closer).

    Protocol, as in the module docstring: per query, gallery entries with the same pid and the same camera are
    removed; the rest is ranked by distance with ties broken by gallery index, stably; AP is the mean of the
    precision at each match's rank (not interpolated); INP is the number of matches over the rank of the last one;
    a query with no remaining match is skipped and counted. Inputs may be numpy arrays or torch tensors (on any
    device; the work happens there). Raises NoValidQueryError if every query is skipped.
    """
    dist = distmat if isinstance(distmat, torch.Tensor) else torch.from_numpy(np.asarray(distmat))
    if dist.ndim != 2:
        raise ValueError(f"distmat must be (num_query, num_gallery), got shape {tuple(dist.shape)}")
    if not dist.is_floating_point() or dist.dtype == torch.bfloat16:
        dist = dist.double() if not dist.is_floating_point() else dist.float()
    dist = dist.detach()
    q_pids_np, g_pids_np = _to_numpy_1d(q_pids, "q_pids"), _to_numpy_1d(g_pids, "g_pids")
    q_cams_np, g_cams_np = _to_numpy_1d(q_camids, "q_camids"), _to_numpy_1d(g_camids, "g_camids")
    num_q, num_g = dist.shape
    if len(q_pids_np) != num_q or len(q_cams_np) != num_q:
        raise ValueError(f"{num_q} query rows but {len(q_pids_np)} query pids and {len(q_cams_np)} query cameras")
    if len(g_pids_np) != num_g or len(g_cams_np) != num_g:
        raise ValueError(f"{num_g} gallery columns but {len(g_pids_np)} gallery pids and {len(g_cams_np)} cameras")
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")

    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    first = np.full(num_q, -1, dtype=np.int64)
    same_pid = _SamePid(g_pids_np)
    rows = max(1, min(num_q, query_chunk_size(num_g, chunk_bytes, buffers=1)))
    sorter = _RowSorter(dist, rows)
    try:
        for start in range(0, num_q, rows):
            stop = min(start + rows, num_q)
            ranks, counts = _match_ranks(
                dist[start:stop], same_pid, q_pids_np[start:stop], q_cams_np[start:stop], g_cams_np, sorter
            )
            _fill(ranks, counts, ap[start:stop], inp[start:stop], first[start:stop])
    finally:
        sorter.close()

    valid = first >= 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise NoValidQueryError(
            f"none of the {num_q} queries has a match in the gallery once same-pid, same-camera entries are removed"
        )
    hits = np.bincount(first[valid], minlength=max_rank)[:max_rank]
    cmc = np.cumsum(hits) / num_valid
    return RankingResult(
        cmc=cmc,
        mAP=float(ap[valid].mean()),
        mINP=float(inp[valid].mean()),
        ap=ap,
        inp=inp,
        first_match_rank=first,
        valid=valid,
        num_valid_queries=num_valid,
        num_skipped_queries=num_q - num_valid,
    )


class _SamePid:
    """The gallery grouped by pid, so that a query's same-pid entries are found without a pass over the gallery."""

    def __init__(self, g_pids: np.ndarray) -> None:
        self.order = np.argsort(g_pids, kind="stable")
        self.pids, self.starts, self.counts = np.unique(g_pids[self.order], return_index=True, return_counts=True)

    def of(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, L) gallery indices sharing each query's pid (padded with 0) and the (C, L) mask of the real ones."""
        if len(self.pids) == 0:
            return np.zeros((len(q_pids), 0), dtype=np.int64), np.zeros((len(q_pids), 0), dtype=bool)
        slot = np.searchsorted(self.pids, q_pids).clip(max=len(self.pids) - 1)
        lengths = np.where(self.pids[slot] == q_pids, self.counts[slot], 0)
        k = np.arange(int(lengths.max()) if len(lengths) else 0)
        real = k[None, :] < lengths[:, None]
        position = np.where(real, self.starts[slot][:, None] + k[None, :], 0)
        return self.order[position], real


class _RowSorter:
    """Sorts the rows of query chunks (values only): numpy's vectorised sort on the CPU, in a reused buffer and split
    over torch's intra-op thread count (numpy releases the GIL while it sorts); torch's sort on other devices."""

    def __init__(self, dist: torch.Tensor, rows: int) -> None:
        self.cpu = dist.device.type == "cpu"
        self.buffer = np.empty((rows, dist.shape[1]), dtype=dist.numpy().dtype) if self.cpu else None
        self.threads = max(1, min(torch.get_num_threads(), rows)) if self.cpu else 1
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def __call__(self, dist: torch.Tensor) -> torch.Tensor:
        if not self.cpu:
            return torch.sort(dist, dim=1).values
        assert self.buffer is not None
        rows = self.buffer[: dist.shape[0]]
        source = dist.numpy()

        def sort_block(block: slice) -> None:
            np.copyto(rows[block], source[block])
            rows[block].sort(axis=1)

        step = -(-len(rows) // self.threads)
        blocks = [slice(i, i + step) for i in range(0, len(rows), step)]
        if self.pool is None:
            for block in blocks:
                sort_block(block)
        else:
            list(self.pool.map(sort_block, blocks))
        return torch.from_numpy(rows)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _match_ranks(
    dist: torch.Tensor,
    same_pid: _SamePid,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    sorter: _RowSorter,
) -> tuple[np.ndarray, np.ndarray]:
    """For a chunk of queries: the 0-based ranks of their matches (padded (C, L) array, ascending) and their number.

    The rank of a match is the number of kept entries strictly closer, plus, when distances tie, the kept entries
    at the same distance with a smaller gallery index. Kept entries strictly closer are the row's entries strictly
    closer (a binary search in the sorted row) minus the removed same-camera ones strictly closer.
    """
    device = dist.device
    index, real = same_pid.of(q_pids)  # gallery indices ascending within each row
    num_c, width = index.shape
    if width == 0:
        return np.zeros((num_c, 0), dtype=np.int64), np.zeros(num_c, dtype=np.int64)
    positive = real & (g_cams[index] != q_cams[:, None])
    junk = real & ~positive
    counts = positive.sum(axis=1)
    values = torch.gather(dist, 1, torch.from_numpy(index).to(device)).cpu().numpy()  # (C, L) same-pid distances
    by_distance = np.argsort(np.where(positive, values, np.inf), axis=1, kind="stable")  # (distance, index) order
    matches = np.take_along_axis(np.where(positive, values, np.inf), by_distance, axis=1)
    match_index = np.take_along_axis(index, by_distance, axis=1)
    removed = np.where(junk, values, np.inf)
    rows = sorter(dist)
    if torch.isnan(rows[:, -1]).any():  # NaN sorts last
        raise ValueError("distmat contains NaN")
    match_t = torch.from_numpy(matches).to(device=device, dtype=rows.dtype)
    left = torch.searchsorted(rows, match_t).cpu().numpy()
    right = torch.searchsorted(rows, match_t, right=True).cpu().numpy()
    ranks = left - (removed[:, None, :] < matches[:, :, None]).sum(axis=2)

    present = np.arange(width)[None, :] < counts[:, None]
    # Ties: add the kept entries at the match's distance with a smaller gallery index (one pass per tied match).
    tied_rows, tied_ks = np.nonzero((right - left != 1) & present)
    for row, k in zip(tied_rows.tolist(), tied_ks.tolist(), strict=True):
        value, position = matches[row, k], match_index[row, k]
        row_values = dist[row, :position].cpu().numpy()
        same_camera = junk[row] & (index[row] < position) & (values[row] == value)
        ranks[row, k] += np.count_nonzero(row_values == value) - np.count_nonzero(same_camera)
    return ranks, counts


def _fill(ranks: np.ndarray, counts: np.ndarray, ap: np.ndarray, inp: np.ndarray, first: np.ndarray) -> None:
    """Per-query AP, INP and first-match rank from the padded match ranks (0-based)."""
    if ranks.shape[1] == 0:
        return
    width = ranks.shape[1]
    k = np.arange(1, width + 1)
    present = k[None, :] <= counts[:, None]
    precision = np.where(present, k[None, :] / (ranks + 1.0), 0.0)
    has = counts > 0
    ap[has] = precision[has].sum(axis=1) / counts[has]
    last = ranks[np.arange(len(counts)), np.maximum(counts - 1, 0)]
    inp[has] = counts[has] / (last[has] + 1.0)
    first[has] = ranks[has, 0]
