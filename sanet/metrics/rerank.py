"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), on top of any distance.

The final distance mixes the original one with a Jaccard distance between k-reciprocal neighbour sets:

    d*(q, g) = (1 - lambda) d_J(q, g) + lambda d(q, g)

over the whole probe-plus-gallery set of N = Q + G images. As in the authors' reference code, the original distance is
squared and divided by its largest value per image first (for a symmetric distance that is the paper's
normalisation), the neighbour sets are expanded with the half-size reciprocal sets of their members that overlap them
by more than 2/3, each set is weighted by exp(-distance) and normalised, and local query expansion averages those
weights over the k2 nearest neighbours.

Everything is tensor work in torch on the inputs' device. The neighbour weights are kept sparse (a few dozen per
image), and the Jaccard term is computed through an inverted index (for each neighbour, the images that have it), so
no N x N weight matrix is formed. The one dense N x N matrix is the normalised original distance itself (Market-1501:
19,281 images, 1.5 GB in float32), which the method needs for every neighbour search.
"""

from __future__ import annotations

import numpy as np
import torch


def _full_distance(q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor) -> torch.Tensor:
    top = torch.cat([q_q, q_g], dim=1)
    bottom = torch.cat([q_g.T, g_g], dim=1)
    full = torch.cat([top, bottom], dim=0).float()
    full.pow_(2)
    row_max = full.max(dim=1, keepdim=True).values.clamp_(min=torch.finfo(full.dtype).tiny)
    return full.div_(row_max)


def _reciprocal(neighbours: torch.Tensor) -> torch.Tensor:
    """mask[i, r] is True when image neighbours[i, r] also has i among its own listed neighbours."""
    index = torch.arange(len(neighbours), device=neighbours.device)[:, None, None]
    return (neighbours[neighbours] == index).any(dim=-1)


def _expanded_sets(
    neighbours: torch.Tensor, recip: torch.Tensor, half: torch.Tensor, recip_half: torch.Tensor, rows: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) pairs of every image's expanded k-reciprocal set, without duplicates.

    The set of i is R(i, k1) joined with R(c, k1/2) for every c in R(i, k1) whose half set shares more than 2/3 of
    its members with R(i, k1).
    """
    n = len(neighbours)
    pairs = []
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        own = neighbours[start:stop]  # (C, W)
        own_mask = recip[start:stop]
        cand_sets = half[own]  # (C, W, H): the half neighbour lists of every candidate
        cand_masks = recip_half[own] & own_mask[:, :, None]  # only candidates that are k-reciprocal to i
        own_members = torch.where(own_mask, own, torch.full_like(own, -1))
        shared = (cand_sets[..., None] == own_members[:, None, None, :]).any(dim=-1) & cand_masks
        size = cand_masks.sum(dim=-1)
        accepted = (shared.sum(dim=-1).float() > (2.0 / 3.0) * size.float()) & (size > 0)
        add_mask = cand_masks & accepted[:, :, None]
        row_ids = torch.arange(start, stop, device=neighbours.device)[:, None]
        cols = torch.cat([own.flatten(1), cand_sets.flatten(1)], dim=1)
        keep = torch.cat([own_mask, add_mask.flatten(1)], dim=1)
        pairs.append(row_ids.expand_as(cols)[keep] * n + cols[keep])
    flat = torch.unique(torch.cat(pairs))
    return flat // n, flat % n


def _row_normalised(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, rows, values)
    return values / sums[rows]


def _csr_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointer of (row-sorted) COO entries."""
    counts = torch.bincount(rows, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _gather_rows(pointer: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each entry of `which`, the positions of its CSR row's entries; returns (owner index, entry position)."""
    starts, lengths = pointer[which], pointer[which + 1] - pointer[which]
    owner = torch.repeat_interleave(torch.arange(len(which), device=which.device), lengths)
    offsets = torch.arange(len(owner), device=which.device) - torch.repeat_interleave(
        lengths.cumsum(0) - lengths, lengths
    )
    return owner, starts[owner] + offsets


def _query_expansion(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, neighbours: torch.Tensor, k2: int, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average every image's weights over its k2 nearest neighbours (itself included): sparse, coalesced."""
    pointer = _csr_rows(rows, n)
    sources = neighbours[:, :k2].flatten()
    owner, position = _gather_rows(pointer, sources)
    keys = torch.div(owner, k2, rounding_mode="floor") * n + cols[position]
    unique, inverse = torch.unique(keys, return_inverse=True)  # sorted: row-major, duplicates summed below
    summed = torch.zeros(len(unique), dtype=values.dtype, device=values.device)
    summed.index_add_(0, inverse, values[position] / k2)
    return unique // n, unique % n, summed


def k_reciprocal_rerank(
    q_g: torch.Tensor | np.ndarray,
    q_q: torch.Tensor | np.ndarray,
    g_g: torch.Tensor | np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    query_rows: int = 256,
) -> torch.Tensor:
    """Re-ranked (Q, G) distances from query-gallery, query-query and gallery-gallery distances (any metric).

    k1 is the size of the reciprocal neighbourhoods (paper 20), k2 that of the local query expansion (paper 6; 1
    turns it off) and lambda_value the weight of the original distance (paper 0.3). Returns float32 on the inputs'
    device.
    """
    q_g, q_q, g_g = (torch.as_tensor(x) for x in (q_g, q_q, g_g))
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(
            f"re-ranking needs q_q {(num_q, num_q)} and g_g {(num_g, num_g)} for q_g {(num_q, num_g)}; "
            f"got {tuple(q_q.shape)} and {tuple(g_g.shape)}"
        )
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1; got {k1}, {k2}, {lambda_value}")
    device = q_g.device
    q_q, g_g = q_q.to(device), g_g.to(device)
    full = _full_distance(q_g, q_q, g_g)
    n = num_q + num_g
    k1 = min(k1, n - 1)
    k_half = int(np.around(k1 / 2.0))
    k2 = min(k2, n)
    nearest = torch.topk(full, max(k1 + 1, k2), dim=1, largest=False, sorted=True).indices
    neighbours = nearest[:, : k1 + 1].contiguous()
    half = nearest[:, : k_half + 1].contiguous()
    recip = _reciprocal(neighbours)
    recip_half = _reciprocal(half)

    rows, cols = _expanded_sets(neighbours, recip, half, recip_half)
    values = _row_normalised(rows, cols, torch.exp(-full[rows, cols]), n)
    if k2 > 1:
        rows, cols, values = _query_expansion(rows, cols, values, nearest, k2, n)

    jaccard = _jaccard_to_gallery(rows, cols, values, num_q, n, query_rows)
    original = full[:num_q, num_q:]
    return jaccard.mul_(1.0 - lambda_value).add_(original, alpha=lambda_value)


def _jaccard_to_gallery(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, num_q: int, n: int, query_rows: int
) -> torch.Tensor:
    """Jaccard distance 1 - |V_i ^ V_j| / |V_i v V_j| of weight vectors, queries against gallery, via an inverted index.

    With rows that sum to 1, |V_i v V_j| = 2 - |V_i ^ V_j|, where |a ^ b| = sum_k min(a_k, b_k).
    """
    num_g = n - num_q
    gallery = rows >= num_q
    g_rows, g_cols, g_vals = rows[gallery] - num_q, cols[gallery], values[gallery]
    by_col = torch.argsort(g_cols, stable=True)
    g_rows, g_cols, g_vals = g_rows[by_col], g_cols[by_col], g_vals[by_col]
    col_pointer = _csr_rows(g_cols, n)
    pointer = _csr_rows(rows, n)
    out = torch.empty(num_q, num_g, dtype=torch.float32, device=values.device)
    for start in range(0, num_q, query_rows):
        stop = min(start + query_rows, num_q)
        q_entries = torch.arange(int(pointer[start]), int(pointer[stop]), device=values.device)
        q_rows, q_cols, q_vals = rows[q_entries] - start, cols[q_entries], values[q_entries]
        owner, position = _gather_rows(col_pointer, q_cols)  # every gallery image sharing each query neighbour
        overlap = torch.minimum(q_vals[owner], g_vals[position]).float()
        inter = torch.zeros((stop - start) * num_g, dtype=torch.float32, device=values.device)
        inter.index_add_(0, q_rows[owner] * num_g + g_rows[position], overlap)
        inter = inter.view(stop - start, num_g)
        out[start:stop] = 1.0 - inter / (2.0 - inter)
    return out
