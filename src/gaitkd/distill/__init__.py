"""KD losses of the two branch slots, part alignment and aggregation.

Decision slot (part-wise logits): GaitKD's part-wise KL (``decision_kl``), Hinton KD on part-averaged distributions
(``kd``), logit MSE (``logit_mse``), DKD (``dkd``), knowledge-adjusted KL (``ka_ps``, ``ka_lsr``). Boundary slot
(part embeddings): activation boundary (``activation_boundary``), feature MSE (``feat_mse``), attention transfer
(``attention_transfer``). Importing this package registers them all in :mod:`gaitkd.losses`.
"""

from __future__ import annotations

from torch import Tensor

from gaitkd.distill.align import ALIGN_MODES, AuxPartClassifier, PartConnector, align_parts
from gaitkd.distill.attention import AttentionTransferLoss
from gaitkd.distill.base import FeatureKD, LogitKD, TemperedLogitKD, standardize_logits
from gaitkd.distill.boundary import ActivationBoundaryLoss
from gaitkd.distill.decision import DecisionKD
from gaitkd.distill.dkd import DKDLoss
from gaitkd.distill.feat_mse import FeatureMSELoss
from gaitkd.distill.hinton import HintonKD
from gaitkd.distill.ka_lsr import KALabelSmoothingKD
from gaitkd.distill.ka_ps import KAProbabilityShiftKD
from gaitkd.distill.logit_mse import LogitMSEKD


def weighted_sum(terms: dict[str, tuple[float, Tensor]]) -> Tensor:
    """OpenGait's aggregation: ``sum_k weight_k * loss_k.mean()`` (``[P]`` losses reduce by mean)."""
    if not terms:
        raise ValueError("weighted_sum: no loss terms")
    return sum(w * loss.mean() for w, loss in terms.values())


__all__ = [
    "ALIGN_MODES",
    "ActivationBoundaryLoss",
    "AttentionTransferLoss",
    "AuxPartClassifier",
    "DKDLoss",
    "DecisionKD",
    "FeatureKD",
    "FeatureMSELoss",
    "HintonKD",
    "KALabelSmoothingKD",
    "KAProbabilityShiftKD",
    "LogitKD",
    "LogitMSEKD",
    "PartConnector",
    "TemperedLogitKD",
    "align_parts",
    "standardize_logits",
    "weighted_sum",
]
