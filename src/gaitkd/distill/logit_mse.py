"""Logit regression: mean squared error between the calibrated logits of teacher and student."""

from __future__ import annotations

from torch import Tensor

from gaitkd.distill.base import LogitKD
from gaitkd.losses.registry import register


@register("logit_mse")
class LogitMSEKD(LogitKD):
    """``mean((scale * logits_s - teacher_scale * logits_t)^2)`` over all ``N*K*P`` elements; no temperature.

    Equals GaitKD's ``LogitsKD_MSELoss(scale)`` when both scales are equal.
    """

    def forward(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict]:
        """logits_s, logits_t ``[N, K, P]``; labels unused -> scalar loss, info {loss}."""
        s, t = self.calibrated(logits_s, logits_t, labels)
        loss = (s - t).pow(2).mean()
        return loss, {"loss": loss.detach().clone()}
