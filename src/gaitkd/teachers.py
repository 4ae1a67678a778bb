"""Several teachers: what the module is given per teacher, and how the teachers' KD terms are combined.

Each teacher has its own KD branch (alignment, connector, decision + boundary losses). Its terms
``{term: (weight, loss)}`` are renamed ``<teacher>/<term>`` and their weights multiplied by the teacher's factor:

- ``sum``: factor 1 for every teacher (GaitKD's code: every teacher's terms are added to the objective);
- ``mean``: factor ``1 / number of teachers``;
- ``weighted``: factor = the teacher's ``weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

COMBINE_MODES = ("sum", "mean", "weighted")
TERMS = ("decision", "boundary")  # the KD branch's two slots
SINGLE_TEACHER = "teacher"  # the name of the teacher given by the `teacher=` group (or `GaitKDModule(teacher=...)`)

Terms = dict[str, tuple[float, Tensor]]


@dataclass
class Teacher:
    """One frozen teacher as the module receives it.

    Args:
        model: the plain teacher ``nn.Module`` (weights loaded).
        distill: this teacher's ``{part_align, connector, decision, boundary}`` (the ``distill`` group with the
            teacher's own overrides applied).
        logit_scale: scale of its logits (raw GaitGL: 1, cosine heads: 16).
        weight: its factor under ``combine="weighted"``.
    """

    model: nn.Module
    distill: dict[str, Any] = field(default_factory=dict)
    logit_scale: float = 1.0
    weight: float = 1.0


def term_on(distill: Mapping, term: str) -> bool:
    """Whether ``distill[term]`` (``decision`` / ``boundary``) is a loss with a non-zero weight."""
    cfg = distill.get(term)
    return cfg is not None and float(cfg.get("weight", 1.0)) != 0.0


def takes_part(distill: Mapping, weight: float, combine: str) -> bool:
    """A teacher is built and run only if it adds a KD term: one of its terms is on and its factor is not 0."""
    return any(term_on(distill, t) for t in TERMS) and (combine != "weighted" or weight != 0.0)


def combine_factors(combine: str, weights: dict[str, float]) -> dict[str, float]:
    """The factor of each teacher (``weights``: name -> its ``weight``) under ``combine``."""
    if combine not in COMBINE_MODES:
        raise ValueError(f"distill.combine must be one of {COMBINE_MODES}, got {combine!r}")
    if combine == "weighted":
        return {name: float(w) for name, w in weights.items()}
    factor = 1.0 / len(weights) if combine == "mean" and weights else 1.0
    return dict.fromkeys(weights, factor)


def combine_terms(per_teacher: dict[str, Terms], factors: dict[str, float]) -> Terms:
    """``{teacher: {term: (w, loss)}}`` -> ``{"<teacher>/<term>": (factor * w, loss)}`` (for ``weighted_sum``)."""
    return {
        f"{name}/{term}": (factors[name] * weight, loss)
        for name, terms in per_teacher.items()
        for term, (weight, loss) in terms.items()
    }
