"""Knowledge-adjusted KD by probability shift (KA-PS): the teacher's wrong top class trades places with the label."""

from __future__ import annotations

import torch
from torch import Tensor

from gaitkd.distill.base import teacher_mistakes
from gaitkd.distill.decision import DecisionKD
from gaitkd.losses.registry import register


@register("ka_ps")
class KAProbabilityShiftKD(DecisionKD):
    """Part-wise KL of :class:`DecisionKD` with corrected soft targets (GaitKD's ``LogitsKD_KA_PSLoss``).

    In every cell ``(n, p)`` where the teacher's argmax over K is not ``labels[n]``, the probabilities of the
    predicted class and of the label are swapped, so the label becomes the top class and the distribution keeps its
    shape. Correct cells are unchanged.
    """

    needs_labels = True

    def teacher_probs(self, p: Tensor, labels: Tensor | None) -> Tensor:
        wrong = teacher_mistakes(p, labels)[:, None]  # [N, 1, P]
        pred = p.argmax(1, keepdim=True)  # [N, 1, P]
        label = labels[:, None, None].expand_as(pred)
        p_pred, p_label = p.gather(1, pred), p.gather(1, label)
        # where the teacher is right pred == label, and both scatters write the value already there
        shifted = p.scatter(1, pred, torch.where(wrong, p_label, p_pred))
        return shifted.scatter(1, label, torch.where(wrong, p_pred, p_label))
