"""Decoupled KD (Zhao et al., CVPR 2022): target-class and non-target-class KD with their own weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gaitkd.distill.base import TemperedLogitKD, soft_kl
from gaitkd.losses.registry import register

# DKD's reference code removes the target class from the non-target softmax with this offset rather than -inf
GT_MASK_OFFSET = 1000.0


def target_vs_rest(p: Tensor, gt: Tensor) -> Tensor:
    """``[p_y, sum_{k != y} p_k]``: probabilities ``[N, K, P]`` and one-hot ``gt [N, K, 1]`` -> ``[N, 2, P]``."""
    return torch.stack([(p * gt).sum(1), (p * (1 - gt)).sum(1)], dim=1)


@register("dkd")
class DKDLoss(TemperedLogitKD):
    """``alpha * TCKD + beta * NCKD`` over the ``B = N*P`` (sequence, part) cells (GaitKD's ``LogitsKD_DKDLoss``).

    With ``p = softmax(calibrated logits / T)`` over K in each cell and the cell's label ``y = labels[n]``:

    - TCKD: ``KL(b_t || b_s)`` of the binary distributions ``b = [p_y, 1 - p_y]`` (the student's clamped at 1e-12
      before the log);
    - NCKD: ``KL`` of the distributions over the non-target classes, the target masked with ``-1000`` before the
      softmax;

    each summed over cells, ``* T^2 / B``. The normaliser is the mean over all N*P cells: no extra ``/ P``
    (unlike :class:`DecisionKD`). info: {loss, tckd, nckd} (tckd and nckd unweighted).
    """

    needs_labels = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, scale: float = 16.0,
                 teacher_scale: float | None = None, standardize: bool = False) -> None:
        super().__init__(T=T, scale=scale, teacher_scale=teacher_scale, standardize=standardize)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict]:
        """logits_s, logits_t ``[N, K, P]``, labels ``[N]`` -> scalar loss, info {loss, tckd, nckd}."""
        s, t = self.calibrated(logits_s, logits_t, labels)
        n, k, parts = s.shape
        s, t = s / self.T, t / self.T
        gt = F.one_hot(labels, k).to(s.dtype)[:, :, None]  # [N, K, 1]
        b_s, b_t = target_vs_rest(F.softmax(s, dim=1), gt), target_vs_rest(F.softmax(t, dim=1), gt)
        norm = self.T**2 / (n * parts)
        tckd = soft_kl(b_s.clamp_min(1e-12).log(), b_t) * norm
        nckd = soft_kl(F.log_softmax(s - GT_MASK_OFFSET * gt, dim=1),
                       F.softmax(t - GT_MASK_OFFSET * gt, dim=1)) * norm
        loss = self.alpha * tckd + self.beta * nckd
        return loss, {"loss": loss.detach().clone(), "tckd": tckd.detach().clone(), "nckd": nckd.detach().clone()}
