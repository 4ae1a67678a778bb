"""Hinton et al.'s KD on one class distribution per sequence: the general-KD baseline for part-based models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gaitkd.distill.base import TemperedLogitKD, soft_kl
from gaitkd.losses.registry import register


def part_mixture_log_probs(logits: Tensor, T: float) -> Tensor:
    """``log( (1/P) sum_p softmax(logits[:, :, p] / T) )``: ``[N, K, P] -> [N, K]``, computed in log space."""
    return torch.logsumexp(F.log_softmax(logits / T, dim=1), dim=2) - math.log(logits.size(2))


@register("kd")
class HintonKD(TemperedLogitKD):
    """``T^2 / N * sum_n KL(pbar_t[n] || qbar_s[n])`` between *part-averaged* class distributions.

    ``pbar[n] = (1/P) sum_p softmax(calibrated logits[n, :, p] / T)`` for each model: every part classifier votes
    with its distribution and the sequence's class distribution is their mixture, as a model with one classifier
    would give. This is the general-KD baseline without GaitKD's part calibration: one KL per sequence instead
    of one per part, so the student's parts are only asked to agree with the teacher *on average*. It reduces to
    :class:`DecisionKD` when ``P = 1``. Each model keeps its own logit scale (``scale`` / ``teacher_scale``), as
    for every decision-slot loss: a shared scale would make raw-logit and cosine-head teachers incomparable.
    """


    def forward(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict]:
        """logits_s, logits_t ``[N, K, P]``; labels unused -> scalar loss, info {loss}."""
        s, t = self.calibrated(logits_s, logits_t, labels)
        log_q = part_mixture_log_probs(s, self.T)
        p = part_mixture_log_probs(t, self.T).exp()
        loss = soft_kl(log_q, p) / s.size(0) * self.T**2
        return loss, {"loss": loss.detach().clone()}
