"""Boundary-level KD branch: Heo et al.'s activation-boundary hinge, with GaitKD's normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gaitkd.distill.base import FeatureKD
from gaitkd.losses.registry import register


def ab_hinge_sum(s: Tensor, t: Tensor, margin: float) -> Tensor:
    """``sum[(s-m)^2 where t>0 and s<=m] + sum[(s+m)^2 where t<=0 and s>-m]`` (same-shape tensors -> scalar).

    The squared ReLU form is that hinge exactly: it is 0 on the correct side of the margin.
    """
    pos = (t > 0).to(s.dtype)
    return (pos * F.relu(margin - s).pow(2) + (1 - pos) * F.relu(margin + s).pow(2)).sum()


@register("activation_boundary")
class ActivationBoundaryLoss(FeatureKD):
    """Activation-boundary KD: the student must reproduce the sign pattern of the teacher with a margin.

    Same semantics as GaitKD's ``FeatsKD_ABLoss``: ``feats_s``/``feats_t`` are tensors or lists of tensors;
    entry i has weight ``2^(i - feat_num + 1)``, the lists are zipped with the weights (so truncated to
    ``feat_num`` entries), and the loss is the mean of ``w_i * hinge_i / Nn_i`` over the entries, where
    ``Nn = N*P`` for ``[N, C, P]`` part embeddings and ``Nn = N`` for ``>= 4-D`` feature maps.
    """

    def __init__(self, margin: float = 1.0, feat_num: int = 1) -> None:
        super().__init__()
        if feat_num < 1:
            raise ValueError(f"ActivationBoundaryLoss: feat_num must be >= 1, got {feat_num}")
        self.margin = float(margin)
        self.feat_num = int(feat_num)

    def forward(self, feats_s: Tensor | Sequence[Tensor], feats_t: Tensor | Sequence[Tensor]) -> tuple[Tensor, dict]:
        """feats_s, feats_t: ``[N, C, P]`` / ``[N, C, H, W, ...]`` or lists of them -> scalar loss, info {loss}."""
        weights = [2.0 ** (i - self.feat_num + 1) for i in range(self.feat_num)]
        terms = []
        for w, (s, t) in zip(weights, self.pairs(feats_s, feats_t)):
            norm = s.size(0) * s.size(2) if s.dim() == 3 else s.size(0)
            terms.append(w * ab_hinge_sum(s, t, self.margin) / norm)
        loss = torch.stack(terms).mean()
        return loss, {"loss": loss.detach().clone()}
