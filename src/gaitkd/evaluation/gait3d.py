"""Gait3D protocol and the rank-list metric functions, numerically identical to OpenGait's ``metric.py``.

Owns (fixtures README §2.3, §2.5):

* ``gait3d_evaluation``: OpenGait's ``evaluate_Gait3D`` (probe iff ``"<label>-<type>-<view>"`` is in the probe
  set, everything else is gallery), optionally on k-reciprocal re-ranked distances (``rerank.py``);
* ``evaluate_rank`` / ``evaluate_many``: CMC (float32), AP and INP per valid probe; ``evaluate_many`` first drops
  gallery items with the probe's pid *and* camid;
* ``mean_iou``: per-sample IoU of binary masks.

Ranking is done on whole blocks of probe rows: NumPy's default ``argsort`` (so ties break as in the reference),
a match matrix, then ``cumsum``-based CMC / AP / INP. AP and INP use float64 NumPy with the reference's
operation order; CMC rows are 0/1, so their float32 sum is an exact count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gaitkd.evaluation.distance import Metric, pairwise_distance
from gaitkd.evaluation.indoor import _encode, _prepare
from gaitkd.evaluation.rerank import re_ranking

MAX_RANK = 50
RANKS: tuple[int, ...] = (1, 5, 10)
# Distance-block elements per probe chunk (argsort also holds int64 indices of the same size).
_BLOCK_ELEMENTS = 1 << 23


@dataclass
class RankStats:
    """Per-probe rank-list statistics of one block of probes (only probes with >= 1 match are kept).

    ``valid [nq] bool``; ``cmc_hits [max_rank] int64`` (valid probes matched within rank r+1);
    ``ap``, ``inp`` float64 ``[n_valid]`` in probe order.
    """

    valid: np.ndarray
    cmc_hits: np.ndarray
    ap: np.ndarray
    inp: np.ndarray


def _as_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _rank_stats(matches: np.ndarray, max_rank: int) -> RankStats:
    """Statistics of ``matches [nq, ng]`` (bool, gallery in ranked order; unmatched padding may trail)."""
    ranked = matches.astype(np.int32)
    n_rel = ranked.sum(1)
    valid = n_rel > 0
    ranked, n_rel = ranked[valid], n_rel[valid]
    cum = ranked.cumsum(1)
    last = ranked.shape[1] - 1 - np.argmax(ranked[:, ::-1], axis=1)  # 0-based rank of the last match
    inp = n_rel / (last + 1.0)
    ap = (cum / np.arange(1.0, ranked.shape[1] + 1.0) * ranked).sum(1) / n_rel
    cmc_hits = (cum[:, :max_rank] > 0).sum(0)
    return RankStats(valid, cmc_hits, ap, inp)


def _merge(stats: list[RankStats], max_rank: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Concatenate block statistics -> ``(cmc f32 [max_rank], all_AP f64, all_INP f64, n_valid)``."""
    ap = np.concatenate([s.ap for s in stats]) if stats else np.zeros(0)
    inp = np.concatenate([s.inp for s in stats]) if stats else np.zeros(0)
    n_valid = len(ap)
    if n_valid == 0:
        raise ValueError(f"{where}: no probe identity appears in the gallery (OpenGait asserts here)")
    hits = np.sum([s.cmc_hits for s in stats], axis=0)
    cmc = hits.astype(np.float32) / np.float32(n_valid)  # float32, as the reference's float32 row sum / count
    return cmc, ap, inp, n_valid


def _check_matrix(distmat: np.ndarray, nq: int, ng: int, where: str) -> None:
    if distmat.ndim != 2 or distmat.shape != (nq, ng):
        raise ValueError(f"{where}: distmat must be [n_probe, n_gallery] = [{nq}, {ng}], got {distmat.shape}")


def _block_rows(ng: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, ng))


def evaluate_rank(
    distmat: torch.Tensor | np.ndarray,
    p_lbls: Sequence | np.ndarray | torch.Tensor,
    g_lbls: Sequence | np.ndarray | torch.Tensor,
    max_rank: int = MAX_RANK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenGait ``evaluate_rank`` on ``distmat [nq, ng]``; probes without a gallery match are skipped.

    Returns:
        ``cmc`` float32 ``[min(max_rank, ng)]`` (fractions), ``all_AP`` and ``all_INP`` float64 ``[n_valid]``.
    """
    cmc, ap, inp, _ = _evaluate_rank(_as_numpy(distmat), *_encode(p_lbls, g_lbls), max_rank=max_rank)
    return cmc, ap, inp


def _evaluate_rank(
    dist: np.ndarray, p_codes: np.ndarray, g_codes: np.ndarray, max_rank: int = MAX_RANK
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    _check_matrix(dist, len(p_codes), len(g_codes), "evaluate_rank")
    max_rank = min(max_rank, dist.shape[1])
    step, stats = _block_rows(dist.shape[1]), []
    for s in range(0, dist.shape[0], step):
        order = np.argsort(dist[s : s + step], axis=1)
        stats.append(_rank_stats(g_codes[order] == p_codes[s : s + step, None], max_rank))
    return _merge(stats, max_rank, "evaluate_rank")


def evaluate_many(
    distmat: torch.Tensor | np.ndarray,
    q_pids: Sequence | np.ndarray | torch.Tensor,
    g_pids: Sequence | np.ndarray | torch.Tensor,
    q_camids: Sequence | np.ndarray | torch.Tensor,
    g_camids: Sequence | np.ndarray | torch.Tensor,
    max_rank: int = MAX_RANK,
) -> tuple[np.ndarray, float, float]:
    """OpenGait ``evaluate_many``: like ``evaluate_rank`` after dropping same-(pid, camid) gallery items per query.

    Where fewer than ``max_rank`` items remain, a valid query's CMC stays 1 beyond the kept list (the reference
    would build a ragged array and fail there).

    Returns:
        ``cmc`` float32 ``[min(max_rank, ng)]``, ``mAP`` and ``mINP`` as fractions.
    """
    dist = _as_numpy(distmat)
    q_lab, g_lab = _encode(q_pids, g_pids)
    q_cam, g_cam = _encode(q_camids, g_camids)
    _check_matrix(dist, len(q_lab), len(g_lab), "evaluate_many")
    if len(q_cam) != len(q_lab) or len(g_cam) != len(g_lab):
        raise ValueError("evaluate_many: q_camids / g_camids must have one entry per query / gallery item")
    max_rank = min(max_rank, dist.shape[1])
    step, stats = _block_rows(dist.shape[1]), []
    for s in range(0, dist.shape[0], step):
        rows = slice(s, s + step)
        order = np.argsort(dist[rows], axis=1)
        same = g_lab[order] == q_lab[rows, None]
        keep = ~(same & (g_cam[order] == q_cam[rows, None]))
        # Move kept items to the front in ranked order; removed ones trail as non-matches.
        compact = np.argsort(~keep, axis=1, kind="stable")
        stats.append(_rank_stats(np.take_along_axis(same & keep, compact, 1), max_rank))
    cmc, ap, inp, _ = _merge(stats, max_rank, "evaluate_many")
    return cmc, float(np.mean(ap)), float(np.mean(inp))


def mean_iou(m1: torch.Tensor | np.ndarray, m2: torch.Tensor | np.ndarray, eps: float = 1.0e-9) -> torch.Tensor:
    """OpenGait ``mean_iou`` of binary masks ``[n, h, w]`` -> ``[n]`` float32 (0 for two empty masks)."""
    a, b = (torch.as_tensor(m).to(torch.float32) for m in (m1, m2))
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"mean_iou: masks must share a shape [n, ...], got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    inter = (a * b).reshape(n, -1).sum(-1)
    union = ((a + b) > 0).to(torch.float32).reshape(n, -1).sum(-1)
    return inter / (union + eps)


def gait3d_evaluation(
    embeddings: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    types: Sequence[str],
    views: Sequence[str],
    probe_set: Sequence[str] | None,
    metric: Metric = "euc",
    rerank: dict | None = None,
) -> dict:
    """OpenGait ``evaluate_Gait3D`` (§2.3), optionally on re-ranked distances (§2.4).

    Args:
        embeddings: ``[N, C, P]``; labels/types/views: N strings (Gait3D: id / camid_videoid / seq).
        probe_set: keys ``"<label>-<type>-<view>"`` of the probe sequences; every other sequence is gallery.
        metric: ``euc`` or ``cos``.
        rerank: ``None`` or ``{"k1", "k2", "lambda_value"}``: re-rank ``dist(concat(probe, gallery))`` first.

    Returns:
        ``Rank-1``, ``Rank-5``, ``Rank-10`` (float32 values, NaN beyond the gallery size), ``mAP``, ``mINP``
        (percent floats), plus ``cmc`` float32 ``[min(50, n_gallery)]`` (fractions), ``all_AP`` / ``all_INP``
        float64 ``[n_valid]`` (probe order), ``n_valid`` and ``n_skipped`` (probes whose label has no gallery).
    """
    if probe_set is None:
        raise ValueError("gait3d: probe_set is required (the PROBE_SET keys '<label>-<type>-<view>' of the split)")
    emb, lab, typ, vie = _prepare(embeddings, labels, types, views, metric)
    keys = np.char.add(np.char.add(np.char.add(np.char.add(lab, "-"), typ), "-"), vie)
    is_probe = np.isin(keys, np.asarray(list(probe_set), dtype=str))
    probes, gallery = np.flatnonzero(is_probe), np.flatnonzero(~is_probe)
    if len(probes) == 0 or len(gallery) == 0:
        raise ValueError(f"gait3d: need probes and gallery, got {len(probes)} probe(s) matching probe_set and "
                         f"{len(gallery)} gallery sequence(s)")
    (codes,) = _encode(lab)
    p_codes, g_codes = codes[probes], codes[gallery]
    device = emb.device
    p_emb, g_emb = (emb[torch.as_tensor(idx, device=device)] for idx in (probes, gallery))
    if rerank is None:
        dist = pairwise_distance(p_emb, g_emb, metric).cpu().numpy()
    else:
        unknown = set(rerank) - {"k1", "k2", "lambda_value"}
        if unknown:
            raise ValueError(f"gait3d: rerank accepts keys k1, k2, lambda_value; got unknown {sorted(unknown)}")
        both = torch.cat([p_emb, g_emb])
        dist = re_ranking(pairwise_distance(both, both, metric), len(probes), **rerank)
    cmc, ap, inp, n_valid = _evaluate_rank(dist, p_codes, g_codes)
    result: dict = {
        f"Rank-{r}": float(cmc[r - 1] * np.float32(100)) if r <= len(cmc) else float("nan") for r in RANKS
    }
    result.update(mAP=float(np.mean(ap) * 100), mINP=float(np.mean(inp) * 100))
    result.update(cmc=cmc, all_AP=ap, all_INP=inp, n_valid=n_valid, n_skipped=len(probes) - n_valid)
    return result
