"""Decision-level KD branch: part-wise temperature KL between teacher and student class distributions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gaitkd.distill.base import TemperedLogitKD, soft_kl
from gaitkd.losses.registry import register


@register("decision_kl")
class DecisionKD(TemperedLogitKD):
    """``T^2 / (N*P) * sum_{n,k,p} p_t (log p_t - log q_s)``, softmax over K of the calibrated logits ``/ T``.

    Equals GaitKD's ``LogitsKD_KLLoss(T, scale)`` (batchmean over N, then / P) when both scales are equal.
    ``teacher_scale=None`` uses ``scale`` for the teacher; set it separately when the two models calibrate
    their logits differently (raw GaitGL logits: 1; cosine BNNeck logits: 16). ``standardize=True`` z-scores
    the scaled logits over K before the temperature (scales then cancel out). Subclasses change the teacher
    distribution through :meth:`teacher_probs` (knowledge-adjusted variants).
    """


    def teacher_probs(self, p: Tensor, labels: Tensor | None) -> Tensor:
        """The teacher's soft targets ``[N, K, P]`` from its tempered distribution ``p`` (identity here)."""
        return p

    def forward(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict]:
        """logits_s, logits_t ``[N, K, P]`` (teacher detached here), labels ``[N]`` -> scalar loss, info {loss}."""
        s, t = self.calibrated(logits_s, logits_t, labels)
        log_q = F.log_softmax(s / self.T, dim=1)
        p = self.teacher_probs(F.softmax(t / self.T, dim=1), labels)
        n, _, parts = s.shape
        loss = soft_kl(log_q, p) / n * self.T**2 / parts
        return loss, {"loss": loss.detach().clone()}
