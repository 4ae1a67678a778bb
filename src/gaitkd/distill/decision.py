"""Decision-level KD branch: part-wise temperature KL between teacher and student class distributions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gaitkd.losses.registry import register


def standardize_logits(x: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score every ``(n, p)`` logit vector over the class dim K: ``[N, K, P] -> [N, K, P]``.

    Logit standardisation (Sun et al., CVPR 2024) removes each model's logit offset and range, so teacher
    and student are compared by the *shape* of their distributions only; T then sets a common sharpness.
    """
    mean = x.mean(1, keepdim=True)
    std = x.std(1, keepdim=True)
    return (x - mean) / (std + eps)


@register("decision_kl")
class DecisionKD(nn.Module):
    """``T^2 / (N*P) * sum_{n,k,p} p_t (log p_t - log q_s)``, softmax over K of ``scale * logits / T``.

    Equals GaitKD's ``LogitsKD_KLLoss(T, scale)`` (batchmean over N, then / P) when both scales are equal.
    ``teacher_scale=None`` uses ``scale`` for the teacher; set it separately when the two models calibrate
    their logits differently (raw GaitGL logits: 1; cosine BNNeck logits: 16). ``standardize=True`` z-scores
    the scaled logits over K before the temperature (scales then cancel out).
    """

    def __init__(self, T: float = 4.0, scale: float = 16.0, teacher_scale: float | None = None,
                 standardize: bool = False) -> None:
        super().__init__()
        self.T = float(T)
        self.scale = float(scale)
        self.teacher_scale = self.scale if teacher_scale is None else float(teacher_scale)
        self.standardize = standardize

    def forward(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict]:
        """logits_s, logits_t ``[N, K, P]`` (teacher detached here); labels unused -> scalar loss, info {loss}."""
        if logits_s.dim() != 3 or logits_s.shape != logits_t.shape:
            raise ValueError(
                f"DecisionKD expects logits_s and logits_t of the same shape [N, K, P]; got "
                f"{tuple(logits_s.shape)} and {tuple(logits_t.shape)} (align parts first)"
            )
        s = self.scale * logits_s.float()
        t = self.teacher_scale * logits_t.detach().float()
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        log_q = F.log_softmax(s / self.T, dim=1)
        p = F.softmax(t / self.T, dim=1)
        n, _, parts = s.shape
        loss = F.kl_div(log_q, p, reduction="sum") / n * self.T**2 / parts
        return loss, {"loss": loss.detach().clone()}
