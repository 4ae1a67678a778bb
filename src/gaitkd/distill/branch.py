"""One teacher's distillation branch: part alignment, embedding connector and the two GaitKD losses.

Everything in here is training-only. The branch sees the student's and the teacher's outputs and returns
weighted loss terms; it never touches the models themselves, so the exported student is the plain model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from gaitkd.distill.align import PartConnector, align_parts
from gaitkd.models.output import GaitOutput


@dataclass(frozen=True)
class OutputShape:
    """Shape of a model's output: channels C and parts P of the embedding, classes K of the logits (or None)."""

    channels: int
    parts: int
    classes: int | None

    @classmethod
    def of(cls, out: GaitOutput) -> OutputShape:
        emb = out.train_embeddings
        return cls(emb.shape[1], emb.shape[2], None if out.logits is None else out.logits.shape[1])


@torch.no_grad()
def probe_shape(model: nn.Module, input_size: tuple[int, int] = (64, 44), frames: int = 3) -> OutputShape:
    """Run one tiny eval-mode forward to read a model's output shape (training mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model(torch.zeros(1, frames, *input_size, device=device))
    finally:
        model.train(was_training)
    return OutputShape.of(out)


def _split_weight(cfg: Any, **extra: Any) -> tuple[float, nn.Module | None]:
    """A branch config is ``{_target_: LossClass, weight: w, **hparams}``; ``None`` or weight 0 disables it."""
    if cfg is None:
        return 0.0, None
    cfg = dict(cfg)
    weight = float(cfg.pop("weight", 1.0))
    return (weight, instantiate(cfg, **extra)) if weight != 0.0 else (0.0, None)


class KDBranch(nn.Module):
    """Decision-level (part-wise KL) and boundary-level (activation boundary) transfer from one teacher.

    Parts: teacher and student outputs are brought to ``min(P_t, P_s)`` parts with ``part_align``
    (``truncate`` is what the GaitKD code does; ``pool`` uses every part of the larger model).
    Widths: when ``C_s != C_t`` a per-part linear connector maps one side to the other's width (``connector``).
    Logit scales: each side's logits are multiplied by its own scale (raw GaitGL logits: 1, cosine heads: 16).
    """

    def __init__(
        self,
        student: OutputShape,
        teacher: OutputShape,
        decision: Any = None,
        boundary: Any = None,
        part_align: str = "pool",
        connector: str = "student",
        student_logit_scale: float = 16.0,
        teacher_logit_scale: float = 16.0,
    ) -> None:
        super().__init__()
        self.parts = min(student.parts, teacher.parts)
        self.part_align = part_align
        scales = {"scale": float(student_logit_scale), "teacher_scale": float(teacher_logit_scale)}
        self.decision_weight, self.decision = _split_weight(decision, **scales)
        self.boundary_weight, self.boundary = _split_weight(boundary)
        if self.decision is not None:
            if teacher.classes is None:
                raise ValueError("distill.decision needs teacher logits, but the teacher has no classifier")
            if student.classes is None:
                raise ValueError("distill.decision needs student logits: set student.aux_classifier=true")
            if teacher.classes != student.classes:
                raise ValueError(
                    f"teacher has {teacher.classes} classes but the student/dataset has {student.classes}: "
                    "decision-level KD needs the same label set (train the teacher on the same training identities)"
                )
        if connector not in ("student", "teacher"):
            raise ValueError(f"distill.connector must be 'student' or 'teacher', got {connector!r}")
        self.connector_side = connector
        self.connector: nn.Module | None = None
        if self.boundary is not None and student.channels != teacher.channels:
            cin, cout = (student.channels, teacher.channels) if connector == "student" else (
                teacher.channels, student.channels)
            self.connector = PartConnector(self.parts, cin, cout)

    def forward(
        self, out_s: GaitOutput, logits_s: Tensor | None, out_t: GaitOutput, labels: Tensor | None = None
    ) -> dict[str, tuple[float, Tensor]]:
        """Weighted KD terms ``{name: (weight, loss)}`` for one batch; teacher tensors carry no gradient.

        ``labels`` ``[N]`` (class indices) reach the decision loss (label-aware methods: DKD, KA).
        """
        terms: dict[str, tuple[float, Tensor]] = {}
        if self.boundary is not None:
            emb_s = align_parts(out_s.train_embeddings, self.parts, self.part_align)
            emb_t = align_parts(out_t.train_embeddings, self.parts, self.part_align)
            if self.connector is not None:
                if self.connector_side == "student":
                    emb_s = self.connector(emb_s)
                else:
                    emb_t = self.connector(emb_t)
            loss, _ = self.boundary(feats_s=emb_s, feats_t=emb_t)
            terms["boundary_kd"] = (self.boundary_weight, loss)
        if self.decision is not None:
            ls = align_parts(logits_s, self.parts, self.part_align)
            lt = align_parts(out_t.logits, self.parts, self.part_align)
            loss, _ = self.decision(logits_s=ls, logits_t=lt, labels=labels)
            terms["decision_kd"] = (self.decision_weight, loss)
        return terms
