"""What every KD loss of a branch slot shares: input checks, per-model logit calibration, the soft-target pieces.

A :class:`KDBranch` has two slots. The ``decision`` slot takes a :class:`LogitKD` (part-wise logits ``[N, K, P]``),
the ``boundary`` slot a :class:`FeatureKD` (part embeddings ``[N, C, P]``). Each class declares what the branch must
know about it (``slot``, ``needs_same_width``), so the branch never special-cases loss names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def standardize_logits(x: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score every ``(n, p)`` logit vector over the class dim K: ``[N, K, P] -> [N, K, P]``.

    Logit standardisation (Sun et al., CVPR 2024) removes each model's logit offset and range, so teacher
    and student are compared by the *shape* of their distributions only; T then sets a common sharpness.
    """
    mean = x.mean(1, keepdim=True)
    std = x.std(1, keepdim=True)
    return (x - mean) / (std + eps)


def soft_kl(log_q: Tensor, p: Tensor) -> Tensor:
    """``sum p * (log p - log q)`` over every element (terms with ``p = 0`` give 0) -> scalar."""
    return F.kl_div(log_q, p, reduction="sum")


def teacher_mistakes(p: Tensor, labels: Tensor) -> Tensor:
    """Cells where the teacher's top class is not the label: ``p [N, K, P]``, ``labels [N]`` -> bool ``[N, P]``."""
    return p.argmax(1) != labels[:, None]


class LogitKD(nn.Module):
    """Base of the decision-slot losses on part-wise logits ``[N, K, P]``.

    Per-model calibration: the student's logits are multiplied by ``scale``, the teacher's by ``teacher_scale``
    (``None``: the same as ``scale``, which is how GaitKD's losses use their single ``scale``) before any
    temperature. ``standardize=True`` z-scores every scaled part logit vector over K (:func:`standardize_logits`).
    Subclasses set ``needs_labels`` when they read the batch labels.
    """

    slot: ClassVar[str] = "decision"
    needs_labels: ClassVar[bool] = False

    def __init__(self, scale: float = 16.0, teacher_scale: float | None = None, standardize: bool = False) -> None:
        super().__init__()
        self.scale = float(scale)
        self.teacher_scale = self.scale if teacher_scale is None else float(teacher_scale)
        self.standardize = bool(standardize)

    def calibrated(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """Checked, scaled (and optionally standardised) float32 logits; the teacher side is detached."""
        name = type(self).__name__
        if logits_s.dim() != 3 or logits_s.shape != logits_t.shape:
            raise ValueError(
                f"{name} expects logits_s and logits_t of the same shape [N, K, P]; got "
                f"{tuple(logits_s.shape)} and {tuple(logits_t.shape)} (align parts first)"
            )
        if self.needs_labels and (labels is None or labels.shape != (logits_s.size(0),)):
            got = None if labels is None else tuple(labels.shape)
            raise ValueError(f"{name} needs labels [N] = [{logits_s.size(0)}] class indices; got {got}")
        s = self.scale * logits_s.float()
        t = self.teacher_scale * logits_t.detach().float()
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        return s, t


class TemperedLogitKD(LogitKD):
    """A :class:`LogitKD` that compares tempered distributions: softmax over K of ``calibrated logits / T``."""

    def __init__(self, T: float = 4.0, scale: float = 16.0, teacher_scale: float | None = None,
                 standardize: bool = False) -> None:
        super().__init__(scale=scale, teacher_scale=teacher_scale, standardize=standardize)
        if T <= 0:
            raise ValueError(f"{type(self).__name__}: the temperature T must be > 0, got {T}")
        self.T = float(T)


class FeatureKD(nn.Module):
    """Base of the boundary-slot losses on part embeddings ``[N, C, P]`` (or lists of feature tensors).

    ``needs_same_width``: the loss compares teacher and student element-wise, so the branch adds its per-part
    connector when their widths differ. Set it to ``False`` for losses that reduce over channels first.
    """

    slot: ClassVar[str] = "boundary"
    needs_same_width: ClassVar[bool] = True

    def pairs(
        self, feats_s: Tensor | Sequence[Tensor], feats_t: Tensor | Sequence[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Checked ``(student float32, detached teacher float32)`` pairs; a single tensor is a list of one."""
        name = type(self).__name__
        feats_s = [feats_s] if torch.is_tensor(feats_s) else list(feats_s)
        feats_t = [feats_t] if torch.is_tensor(feats_t) else list(feats_t)
        if not feats_s or len(feats_s) != len(feats_t):
            raise ValueError(f"{name} needs equally long, non-empty feature lists; got {len(feats_s)} and "
                             f"{len(feats_t)}")
        for s, t in zip(feats_s, feats_t):
            # widths (dim 1) may differ only for losses that reduce over channels
            s_shape, t_shape = (s.shape, t.shape) if self.needs_same_width else (s.shape[:1] + s.shape[2:],
                                                                                 t.shape[:1] + t.shape[2:])
            if s.dim() < 3 or s.dim() != t.dim() or s_shape != t_shape:
                what = "same-shape" if self.needs_same_width else "same-shape (channels aside)"
                raise ValueError(
                    f"{name} expects {what} student/teacher features with >= 3 dims; got {tuple(s.shape)} and "
                    f"{tuple(t.shape)}"
                )
        return [(s.float(), t.detach().float()) for s, t in zip(feats_s, feats_t)]
