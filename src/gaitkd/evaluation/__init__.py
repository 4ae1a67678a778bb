"""Evaluation: OpenGait-exact distances and protocols, the DDP embedding collector and result reports.

Public entry point: ``evaluate(protocol, embeddings, labels, types, views, ...)`` returns OpenGait's result
names without the ``scalar/test_accuracy/`` prefix (``NM@R1``, ``NM-Rank@1``, ``NM-mAP``, ...) as floats, plus
the per-view arrays (see the protocol functions in ``indoor.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gaitkd.evaluation.collect import EmbeddingCollector
from gaitkd.evaluation.distance import pairwise_distance
from gaitkd.evaluation.gait3d import evaluate_many, evaluate_rank, gait3d_evaluation, mean_iou
from gaitkd.evaluation.indoor import (
    compute_acc_map,
    cross_view_gallery_evaluation,
    indoor_dataset_key,
    single_view_gallery_evaluation,
)
from gaitkd.evaluation.rerank import re_ranking

PROTOCOLS: tuple[str, ...] = ("casia_b", "oumvlp", "gait3d")
RESULT_PREFIX = "scalar/test_accuracy/"


def canonical_protocol(name: str) -> str:
    """Map a protocol or OpenGait dataset name ('CASIA-B', 'OUMVLP', 'Gait3D', ...) to a key of ``PROTOCOLS``."""
    key = indoor_dataset_key(name)
    if key is None and name.strip().lower() == "gait3d":
        key = "gait3d"
    if key is None:
        raise ValueError(f"unknown evaluation protocol {name!r}; expected one of {PROTOCOLS} (or 'CASIA-B', 'OUMVLP')")
    return key


def evaluate(
    protocol: str,
    embeddings: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    types: Sequence[str],
    views: Sequence[str],
    metric: str = "euc",
    cross_view_gallery: bool = False,
    probe_set: Sequence[str] | None = None,
    rerank: dict | None = None,
    cmc_ranks: int = 0,
) -> dict:
    """Evaluate test embeddings ``[N, C, P]`` with OpenGait's protocol for ``protocol``.

    Args:
        protocol: ``casia_b`` / ``oumvlp`` / ``gait3d`` (or OpenGait's 'CASIA-B' / 'OUMVLP' / 'Gait3D').
        embeddings: ``[N, C, P]`` torch or numpy; labels/types/views: N strings (OpenGait's id / type / view).
        metric: ``euc`` or ``cos``.
        cross_view_gallery: OpenGait's ``evaluator_cfg.cross_view_gallery`` switch (indoor protocols only).
        probe_set: Gait3D probe keys ``"<label>-<type>-<view>"`` (required for gait3d, unused otherwise).
        rerank: Gait3D only: ``None`` or ``{"k1", "k2", "lambda_value"}`` for k-reciprocal re-ranking.
        cmc_ranks: CASIA-B / OU-MVLP: also return ``cmc`` ``[T, K]`` (percent, one row per condition), ``K`` =
            ``cmc_ranks`` clipped to the smallest gallery a probe is ranked against; Gait3D always returns its
            ``cmc`` (fractions, OpenGait's).

    Returns:
        Float metrics keyed like OpenGait without the prefix, plus per-view arrays (``view_list``, ``type_order``,
        ``acc``, ``per_view`` or ``acc_raw``, ``map_raw``, ``acc_per_view``, ``map_per_view``); for gait3d
        ``Rank-1/5/10``, ``mAP``, ``mINP`` plus ``cmc``, ``all_AP``, ``all_INP``, ``n_valid``, ``n_skipped``.
    """
    key = canonical_protocol(protocol)
    if key == "gait3d":
        return gait3d_evaluation(embeddings, labels, types, views, probe_set, metric=metric, rerank=rerank)
    if rerank is not None:
        raise ValueError(f"re-ranking is only available for the gait3d protocol, not {key!r}")
    if cmc_ranks < 0:
        raise ValueError(f"cmc_ranks must be >= 0, got {cmc_ranks}")
    fn = cross_view_gallery_evaluation if cross_view_gallery else single_view_gallery_evaluation
    return fn(embeddings, labels, types, views, dataset=key, metric=metric, cmc_ranks=cmc_ranks)


def scalar_metrics(result: dict, prefix: str = "") -> dict[str, float]:
    """The float entries of an ``evaluate`` result (for loggers), optionally prefixed (e.g. ``RESULT_PREFIX``)."""
    return {prefix + k: v for k, v in result.items() if isinstance(v, float)}


__all__ = [
    "PROTOCOLS",
    "RESULT_PREFIX",
    "EmbeddingCollector",
    "canonical_protocol",
    "compute_acc_map",
    "cross_view_gallery_evaluation",
    "evaluate",
    "evaluate_many",
    "evaluate_rank",
    "gait3d_evaluation",
    "mean_iou",
    "pairwise_distance",
    "re_ranking",
    "scalar_metrics",
    "single_view_gallery_evaluation",
]
