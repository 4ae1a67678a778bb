"""One teacher's distillation branch: part alignment, embedding connector and the two slot losses.

Everything in here is training-only. The branch sees the student's and the teacher's outputs and returns
weighted loss terms; it never touches the models themselves, so the exported student is the plain model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from torch import Tensor, nn

from gaitkd.distill.align import ALIGN_MODES, PartConnector, align_parts
from gaitkd.errors import ConfigError
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


def _build_slot(cfg: Any, slot: str, **extra: Any) -> tuple[float, nn.Module | None]:
    """A slot config is ``{_target_: LossClass, weight: w, **hparams}``; ``None`` or weight 0 disables it.

    The loss class must declare that it belongs to this slot (``LossClass.slot``, see :mod:`gaitkd.distill.base`);
    ``extra`` are the keyword arguments the branch adds (the logit scales of the decision slot).
    """
    if cfg is None:
        return 0.0, None
    cfg = dict(cfg)
    weight = float(cfg.pop("weight", 1.0))
    if weight == 0.0:
        return 0.0, None
    key = f"distill.{slot}"
    target = cfg.get("_target_")
    if not target:
        raise ConfigError(f"{key} needs a `_target_` loss class (or null to switch the branch off); got {cfg}")
    try:
        cls = get_class(target)
    except Exception as err:
        raise ConfigError(f"{key}._target_={target}: cannot import it ({err})") from err
    declared = getattr(cls, "slot", None)
    if declared != slot:
        kind = {"decision": "a logit-level loss (part logits [N, K, P])",
                "boundary": "an embedding-level loss (part embeddings [N, C, P])"}
        found = f"{kind[declared]}: put it under distill.{declared}" if declared in kind else "not a KD branch loss"
        raise ConfigError(f"{key} takes {kind[slot]}, but {target} is {found}")
    try:
        return weight, instantiate(cfg, **extra)
    except Exception as err:
        raise ConfigError(f"{key}: cannot build {target} from {cfg}: {err}") from err


class KDBranch(nn.Module):
    """Decision-level (a logit loss, GaitKD: part-wise KL) and boundary-level (an embedding loss, GaitKD:
    activation boundary) transfer from one teacher; either slot may be ``None``.

    Parts: teacher and student outputs are brought to ``min(P_t, P_s)`` parts with ``part_align``
    (``truncate`` is what the GaitKD code does; ``pool`` uses every part of the larger model).
    Widths: when ``C_s != C_t`` and the boundary loss ``needs_same_width``, a per-part linear connector maps one
    side to the other's width (``connector``).
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
        if part_align not in ALIGN_MODES:
            raise ConfigError(f"distill.part_align must be one of {ALIGN_MODES}, got {part_align!r}")
        self.decision_weight, self.decision = _build_slot(decision, "decision", **scales)
        self.boundary_weight, self.boundary = _build_slot(boundary, "boundary")
        if self.decision is not None:
            if teacher.classes is None:
                raise ConfigError(
                    f"distill.decision ({type(self.decision).__name__}) needs teacher logits, but the teacher has no "
                    "classifier: set distill.decision=null (or distill=boundary_only) to teach through embeddings only"
                )
            if student.classes is None:
                raise ConfigError("distill.decision needs student logits: set student.aux_classifier=true")
            if teacher.classes != student.classes:
                raise ConfigError(
                    f"teacher has {teacher.classes} classes but the student/dataset has {student.classes}: "
                    "decision-level KD needs the same label set (train the teacher on the same training identities)"
                )
        if connector not in ("student", "teacher"):
            raise ConfigError(f"distill.connector must be 'student' or 'teacher', got {connector!r}")
        self.connector_side = connector
        self.connector: nn.Module | None = None
        # element-wise boundary losses need equal widths; those reducing over channels first (AT) do not
        needs_width = self.boundary is not None and getattr(self.boundary, "needs_same_width", True)
        if needs_width and student.channels != teacher.channels:
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
