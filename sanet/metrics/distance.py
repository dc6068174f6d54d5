"""Query-gallery distance matrices: the part-aware distance of the paper (Eq. 7), global Euclidean and cosine.

All three run in torch on whatever device the features are on and return a (Q, G) float32 matrix on that device.
The gallery stays whole and the queries are taken in chunks, so the memory a call needs beyond its inputs and its
output is bounded by `chunk_bytes` (a few (chunk, G) float32 temporaries), whatever the benchmark's size. The
products run as float32 matrix multiplications (BLAS / cuBLAS): ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, clamped at
zero against rounding, so a distance matrix costs about what one matrix product of the same shapes costs.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_BYTES = 256 * 2**20
_TEMPORARIES = 2  # (chunk, G) buffers in part_distance besides its output: the part's distance (then the count), a mask


def query_chunk_size(num_gallery: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES, buffers: int = _TEMPORARIES) -> int:
    """How many query rows fit in one chunk when `buffers` (rows, num_gallery) float32 temporaries are alive."""
    per_row = max(1, num_gallery) * 4 * buffers
    return max(1, int(chunk_bytes // per_row))


def _as_float(x: torch.Tensor, name: str, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x.float()


def unshared_distance(q_feats: torch.Tensor, g_feats: torch.Tensor) -> float:
    """The value given to a pair that shares no visible part: larger than every real part-aware distance.

    By the triangle inequality a part's distance is at most ||F_q|| + ||F_g||, so the mean over shared parts is at
    most the largest query part norm plus the largest gallery part norm. The value returned is that bound plus 1 plus
    a relative margin that covers float32 rounding, so such pairs rank after every pair that can be compared, and
    pairs that share nothing tie with each other (and are then ordered by gallery index).
    """
    q_max = q_feats.float().norm(dim=-1).max().item() if q_feats.numel() else 0.0
    g_max = g_feats.float().norm(dim=-1).max().item() if g_feats.numel() else 0.0
    bound = q_max + g_max
    return float(bound * (1.0 + 1e-3) + 1.0)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=-1)


def part_distance(
    q_feats: torch.Tensor,
    q_vis: torch.Tensor,
    g_feats: torch.Tensor,
    g_vis: torch.Tensor,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """Paper Eq. 7: the mean Euclidean distance over the parts visible in both images.

    q_feats (Q, P, D) and g_feats (G, P, D) are part features; q_vis (Q, P) and g_vis (G, P) say which parts are
    visible (boolean, or anything whose non-zero means visible). For a pair (q, g),

        d(q, g) = sum_i v_q^i v_g^i ||F_q^i - F_g^i||_2 / sum_i v_q^i v_g^i .

    A pair with no part visible in both gets `unshared_distance(q_feats, g_feats)`, a finite value larger than every
    real distance of the call (see there). Returns a (Q, G) float32 tensor on the features' device.
    """
    q_feats = _as_float(q_feats, "q_feats", 3)
    g_feats = _as_float(g_feats, "g_feats", 3)
    q_vis = torch.as_tensor(q_vis, device=q_feats.device)
    g_vis = torch.as_tensor(g_vis, device=g_feats.device)
    if q_feats.shape[1:] != g_feats.shape[1:]:
        raise ValueError(f"query parts {tuple(q_feats.shape[1:])} and gallery parts {tuple(g_feats.shape[1:])} differ")
    if q_vis.shape != q_feats.shape[:2] or g_vis.shape != g_feats.shape[:2]:
        raise ValueError(
            f"visibility must be (N, P): got {tuple(q_vis.shape)} for queries of {tuple(q_feats.shape)} and "
            f"{tuple(g_vis.shape)} for gallery of {tuple(g_feats.shape)}"
        )
    num_q, num_parts, _ = q_feats.shape
    num_g = g_feats.shape[0]
    out = torch.empty(num_q, num_g, dtype=torch.float32, device=q_feats.device)
    if num_q == 0 or num_g == 0:
        return out
    unshared = unshared_distance(q_feats, g_feats)
    q_vis = q_vis.bool().float()
    g_vis = g_vis.bool().float()
    # Strided views, not copies: a part's (N, D) slice has unit stride along D, which BLAS takes as it is.
    g_parts = [g_feats[:, i] for i in range(num_parts)]
    g_sq = [_squared_norms(g) for g in g_parts]
    rows = min(num_q, query_chunk_size(num_g, chunk_bytes))
    dist_buffer = torch.empty(rows, num_g, dtype=torch.float32, device=q_feats.device)
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        total, dist = out[start:stop], dist_buffer[: stop - start]
        total.zero_()
        for i in range(num_parts):
            q = q_feats[start:stop, i]
            # ||q||^2 + ||g||^2 - 2 q.g: one GEMM into the reused buffer and one broadcast add; then the root of its
            # positive part, zeroed on the rows of queries that do not show the part, summed over the visible
            # gallery columns.
            torch.addmm(g_sq[i][None, :], q, g_parts[i].T, alpha=-2.0, out=dist)
            dist.add_(_squared_norms(q)[:, None]).clamp_(min=0.0).sqrt_()
            hidden = torch.nonzero(q_vis[start:stop, i] == 0).flatten()
            if len(hidden):
                dist.index_fill_(0, hidden, 0.0)
            total.addcmul_(dist, g_vis[None, :, i])
        count = torch.mm(q_vis[start:stop], g_vis.T, out=dist)  # parts visible in both: a (chunk, P) x (P, G) product
        unseen = count == 0
        total.div_(count.clamp_(min=1.0)).masked_fill_(unseen, unshared)
    return out


def euclidean_distance(
    q_feats: torch.Tensor, g_feats: torch.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> torch.Tensor:
    """Plain Euclidean distance between global features: (Q, D) x (G, D) -> (Q, G) float32."""
    q_feats = _as_float(q_feats, "q_feats", 2)
    g_feats = _as_float(g_feats, "g_feats", 2)
    out = torch.empty(q_feats.shape[0], g_feats.shape[0], dtype=torch.float32, device=q_feats.device)
    g_sq = _squared_norms(g_feats)
    rows = query_chunk_size(g_feats.shape[0], chunk_bytes, buffers=1)
    for start in range(0, q_feats.shape[0], rows):
        q = q_feats[start : start + rows]
        chunk = out[start : start + rows]
        torch.mm(q, g_feats.T, out=chunk)
        chunk.mul_(-2.0).add_(_squared_norms(q)[:, None]).add_(g_sq[None, :]).clamp_(min=0.0).sqrt_()
    return out


def cosine_distance(
    q_feats: torch.Tensor, g_feats: torch.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> torch.Tensor:
    """1 - cosine similarity between global features: (Q, D) x (G, D) -> (Q, G) float32 in [0, 2].

    A zero feature vector has no direction; it is treated as orthogonal to everything (distance 1).
    """
    q_feats = torch.nn.functional.normalize(_as_float(q_feats, "q_feats", 2), dim=1)
    g_feats = torch.nn.functional.normalize(_as_float(g_feats, "g_feats", 2), dim=1)
    out = torch.empty(q_feats.shape[0], g_feats.shape[0], dtype=torch.float32, device=q_feats.device)
    rows = query_chunk_size(g_feats.shape[0], chunk_bytes, buffers=1)
    for start in range(0, q_feats.shape[0], rows):
        chunk = out[start : start + rows]
        torch.mm(q_feats[start : start + rows], g_feats.T, out=chunk)
        chunk.neg_().add_(1.0).clamp_(min=0.0, max=2.0)
    return out
