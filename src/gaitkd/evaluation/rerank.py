"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), numerically identical to OpenGait's ``re_ranking``.

Owns ``re_ranking`` (fixtures README §2.4). OpenGait stores the neighbour-encoding matrix ``V`` in float16 and
does the query expansion and the Jaccard accumulation in float16; changing that moves Rank-1 by points on small
sets, so this module keeps NumPy's float16 arithmetic at exactly those points (NumPy, not torch, so that ``exp``,
``sum`` and ``argsort`` round and break ties the same way as the reference).

Work layout: the k-reciprocal masks of every row are computed at once; only the neighbour *expansion* loops over
rows (each row's candidate set is data-dependent), vectorised within the row. The Jaccard step loops over the
(padded) non-zero columns of the query rows, with all queries and all sequences processed per step.
"""

from __future__ import annotations

import numpy as np
import torch

# Rows of V gathered per query-expansion block ([block, k2, N] float16).
_QE_BLOCK_ELEMENTS = 1 << 24


def _reciprocal_mask(rank: np.ndarray, k: int) -> np.ndarray:
    """``[N, k+1]`` bool: is ``rank[i, j]`` (j ≤ k) a k-reciprocal neighbour of i (i in its own top k+1)?"""
    forward = rank[:, : k + 1]  # [N, k+1]
    backward = rank[forward, : k + 1]  # [N, k+1, k+1]
    return (backward == np.arange(rank.shape[0])[:, None, None]).any(-1)


def _encoding(dist: np.ndarray, rank: np.ndarray, k1: int) -> np.ndarray:
    """``V [N, N]`` float16: Gaussian weights over each row's expanded k-reciprocal set (§2.4 step 2)."""
    n = dist.shape[0]
    half = int(round(k1 / 2))  # Python's round is half-to-even, like np.around
    mask_k1, mask_half = _reciprocal_mask(rank, k1), _reciprocal_mask(rank, half)
    v = np.zeros((n, n), dtype=np.float16)
    member = np.zeros(n, dtype=bool)  # scratch: membership of the current row's k-reciprocal set
    for i in range(n):
        kr = rank[i, : k1 + 1][mask_k1[i]]
        member[kr] = True
        cand = rank[kr, : half + 1]  # [nk, half+1] candidates' forward neighbours
        cand_mask = mask_half[kr]  # their reciprocal sets (unique entries per row)
        overlap = (cand_mask & member[cand]).sum(1)
        accepted = overlap > 2 / 3 * cand_mask.sum(1)
        member[cand[accepted][cand_mask[accepted]]] = True
        expanded = np.flatnonzero(member)  # sorted, like np.unique
        member[expanded] = False
        weight = np.exp(-dist[i, expanded])
        v[i, expanded] = weight / np.sum(weight)
    return v


def _query_expansion(v: np.ndarray, rank: np.ndarray, k2: int) -> np.ndarray:
    """``V[i] = mean(V[rank[i, :k2]])`` in float16 (NumPy accumulates float16 means in float32)."""
    n = v.shape[0]
    out = np.empty_like(v)
    step = max(1, _QE_BLOCK_ELEMENTS // max(1, k2 * n))
    for s in range(0, n, step):
        out[s : s + step] = np.mean(v[rank[s : s + step, :k2]], axis=1)
    return out


def _jaccard(v: np.ndarray, query_num: int) -> np.ndarray:
    """``[q, N]`` float16 Jaccard distance of each query to every sequence (§2.4 step 5).

    ``tmin[i, j]`` accumulates ``min(V[i,l], V[j,l])`` over the non-zero columns l of ``V[i]`` in increasing l,
    rounding to float16 after every addition. Rows are padded to a common length with a zero contribution
    (adding 0 is exact), so each step handles all queries at once.
    """
    vq = v[:query_num]
    nonzero = vq != 0
    counts = nonzero.sum(1)
    width = int(counts.max()) if query_num else 0
    # Stable argsort of ~nonzero puts the non-zero columns first, in increasing order.
    cols = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]  # [q, width]
    valid = np.arange(width)[None, :] < counts[:, None]
    qv = np.where(valid, np.take_along_axis(vq, cols, 1), np.float16(0))  # [q, width]
    tmin = np.zeros((query_num, v.shape[0]), dtype=np.float16)
    for t in range(width):
        tmin += np.minimum(qv[:, t : t + 1], v[:, cols[:, t]].T)  # [q, N] float16
    return 1 - tmin / (2 - tmin)


def re_ranking(
    original_dist: torch.Tensor | np.ndarray,
    query_num: int,
    k1: int = 6,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """OpenGait ``re_ranking``: k-reciprocal re-ranked probe-to-gallery distances.

    Args:
        original_dist: ``[N, N]`` distances of ``concat(probe, gallery)`` to itself (cast to float32).
        query_num: q, the number of probes (the first q rows / columns).
        k1: k-reciprocal neighbourhood size (expansion uses ``round(k1/2)``); k2: query-expansion size (1 = off).
        lambda_value: weight of the normalised original distance in the final distance.

    Returns:
        ``[q, N - q]`` float32 final distances (smaller = more similar).
    """
    od = np.asarray(original_dist.detach().cpu() if isinstance(original_dist, torch.Tensor) else original_dist)
    if od.ndim != 2 or od.shape[0] != od.shape[1]:
        raise ValueError(f"re_ranking: original_dist must be a square [N, N] matrix, got shape {od.shape}")
    if not 0 < query_num <= od.shape[0]:
        raise ValueError(f"re_ranking: query_num must be in [1, {od.shape[0]}], got {query_num}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"re_ranking: k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    od = od.astype(np.float32, copy=False)
    dist = np.transpose(od / np.max(od, axis=0))
    rank = np.argsort(dist, axis=1)  # NumPy's default sort, so ties break as in the reference
    v = _encoding(dist, rank, k1)
    if k2 != 1:
        v = _query_expansion(v, rank, k2)
    jaccard = _jaccard(v, query_num)
    final = jaccard * (1 - lambda_value) + dist[:query_num] * lambda_value  # float16 + float32 -> float32
    return final[:, query_num:]
