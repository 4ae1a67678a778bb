"""Knowledge-adjusted KD by label smoothing (KA-LSR): wrong teacher cells become a label-smoothed one-hot."""

from __future__ import annotations

import torch
from torch import Tensor

from gaitkd.distill.base import teacher_mistakes
from gaitkd.distill.decision import DecisionKD
from gaitkd.losses.registry import register


@register("ka_lsr")
class KALabelSmoothingKD(DecisionKD):
    """Part-wise KL of :class:`DecisionKD` with corrected soft targets (GaitKD's ``LogitsKD_KA_LSR``).

    In every cell ``(n, p)`` where the teacher's argmax over K is not ``labels[n]``, the whole teacher distribution
    is replaced by ``1 - eps`` at the label and ``eps / (K - 1)`` elsewhere. Correct cells are unchanged.
    """

    needs_labels = True

    def __init__(self, T: float = 4.0, scale: float = 16.0, teacher_scale: float | None = None, eps: float = 0.1,
                 standardize: bool = False) -> None:
        super().__init__(T=T, scale=scale, teacher_scale=teacher_scale, standardize=standardize)
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"KALabelSmoothingKD: eps must be in [0, 1), got {eps}")
        self.eps = float(eps)

    def teacher_probs(self, p: Tensor, labels: Tensor | None) -> Tensor:
        n, k, parts = p.shape
        smooth = p.new_full((n, k, parts), self.eps / (k - 1))
        smooth.scatter_(1, labels[:, None, None].expand(n, 1, parts), 1.0 - self.eps)
        return torch.where(teacher_mistakes(p, labels)[:, None], smooth, p)
