"""Deliberately simple reference implementations of the evaluation protocol, for the tests to compare against.

Loops and full stable sorts, written from the definitions and sharing no code with `sanet.metrics`.
"""

from __future__ import annotations

import numpy as np


def ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per query: drop same pid + same camera, stable-sort the rest, read the matches' positions."""
    cmc_hits = np.zeros(max_rank)
    aps, inps, firsts, valid = [], [], [], []
    for i in range(len(q_pids)):
        keep = [j for j in range(len(g_pids)) if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        order = sorted(keep, key=lambda j: (distmat[i][j], j))
        hits = [pos for pos, j in enumerate(order) if g_pids[j] == q_pids[i]]
        if not hits:
            valid.append(False)
            aps.append(np.nan)
            inps.append(np.nan)
            firsts.append(-1)
            continue
        valid.append(True)
        precisions = [(n + 1) / (pos + 1) for n, pos in enumerate(hits)]
        aps.append(sum(precisions) / len(hits))
        inps.append(len(hits) / (hits[-1] + 1))
        firsts.append(hits[0])
        if hits[0] < max_rank:
            cmc_hits[hits[0] :] += 1
    valid = np.array(valid)
    n_valid = int(valid.sum())
    return {
        "cmc": cmc_hits / max(n_valid, 1),
        "ap": np.array(aps),
        "inp": np.array(inps),
        "first": np.array(firsts),
        "valid": valid,
        "mAP": float(np.nanmean(aps)) if n_valid else np.nan,
        "mINP": float(np.nanmean(inps)) if n_valid else np.nan,
        "num_valid": n_valid,
    }


def part_distance(q_feats, q_vis, g_feats, g_vis):
    """Paper Eq. 7 pair by pair; NaN where no part is visible in both images."""
    q_feats, g_feats = np.asarray(q_feats, dtype=np.float64), np.asarray(g_feats, dtype=np.float64)
    out = np.full((len(q_feats), len(g_feats)), np.nan)
    for i in range(len(q_feats)):
        for j in range(len(g_feats)):
            shared = [p for p in range(q_feats.shape[1]) if q_vis[i][p] and g_vis[j][p]]
            if shared:
                out[i, j] = np.mean([np.linalg.norm(q_feats[i, p] - g_feats[j, p]) for p in shared])
    return out


def _reciprocal_set(rank, i, k):
    forward = list(rank[i][: k + 1])
    return [j for j in forward if i in list(rank[j][: k + 1])]


def k_reciprocal(q_g, q_q, g_g, k1, k2, lambda_value):
    """Zhong et al. 2017 written out with dense matrices and explicit sets."""
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    full = full / full.max(axis=1, keepdims=True)
    n, num_q = len(full), len(q_q)
    rank = np.argsort(full, axis=1, kind="stable")
    half = int(np.around(k1 / 2))
    weights = np.zeros((n, n))
    for i in range(n):
        r = _reciprocal_set(rank, i, k1)
        expanded = set(r)
        for c in r:
            rc = _reciprocal_set(rank, c, half)
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expanded |= set(rc)
        members = sorted(expanded)
        w = np.exp(-full[i, members])
        weights[i, members] = w / w.sum()
    if k2 > 1:
        weights = np.stack([weights[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((num_q, n - num_q))
    for i in range(num_q):
        for j in range(num_q, n):
            inter = np.minimum(weights[i], weights[j]).sum()
            union = np.maximum(weights[i], weights[j]).sum()
            jaccard[i, j - num_q] = 1 - inter / union
    return (1 - lambda_value) * jaccard + lambda_value * full[:num_q, num_q:]
