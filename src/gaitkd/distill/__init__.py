"""GaitKD's two distillation branches (decision KL, activation boundary), part alignment and aggregation.

Importing this package registers ``decision_kl`` and ``activation_boundary`` in :mod:`gaitkd.losses`.
"""

from __future__ import annotations

from torch import Tensor

from gaitkd.distill.align import ALIGN_MODES, AuxPartClassifier, PartConnector, align_parts
from gaitkd.distill.boundary import ActivationBoundaryLoss
from gaitkd.distill.decision import DecisionKD, standardize_logits


def weighted_sum(terms: dict[str, tuple[float, Tensor]]) -> Tensor:
    """OpenGait's aggregation: ``sum_k weight_k * loss_k.mean()`` (``[P]`` losses reduce by mean)."""
    if not terms:
        raise ValueError("weighted_sum: no loss terms")
    return sum(w * loss.mean() for w, loss in terms.values())


__all__ = [
    "ALIGN_MODES",
    "ActivationBoundaryLoss",
    "AuxPartClassifier",
    "DecisionKD",
    "PartConnector",
    "align_parts",
    "standardize_logits",
    "weighted_sum",
]
