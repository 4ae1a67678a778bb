"""Non-finite losses: which loss component went NaN / inf at which step, and what the run does about it.

``loss.on_nonfinite=raise`` (default) stops the run with one message naming the components and the step;
``skip`` skips that optimisation step (no backward, no update), counts it (``train/skipped_steps``) and stops only
after ``loss.max_skipped_steps`` such steps, so a run that diverged for good does not go on. A skipped step still
counts toward ``trainer.max_steps`` (Lightning's loop advances). Under DDP every rank must skip the same steps or
the gradient all-reduce waits forever; ``raise`` is the safe choice there until the ranks agree on a skip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gaitkd.errors import GaitKDError

NONFINITE_MODES = ("raise", "skip")


class NonFiniteLossError(GaitKDError, FloatingPointError):
    """A loss component is NaN or inf: the run stops instead of training on garbage."""


def nonfinite_terms(terms: dict[str, tuple[float, Tensor]]) -> list[str]:
    """Names of the loss terms ``{name: (weight, loss)}`` that are not finite; one host sync for all of them."""
    if not terms:
        return []
    finite = torch.stack([torch.isfinite(loss.detach()).all() for _, loss in terms.values()])
    if bool(finite.all()):
        return []
    return [name for name, ok in zip(terms, finite.tolist()) if not ok]


class NonFiniteGuard:
    """What to do with a step whose loss terms are not all finite (see the module docstring)."""

    def __init__(self, mode: str = "raise", max_skipped: int = 50) -> None:
        if mode not in NONFINITE_MODES:
            raise ValueError(f"loss.on_nonfinite must be one of {NONFINITE_MODES}, got {mode!r}")
        if max_skipped < 1:
            raise ValueError(f"loss.max_skipped_steps must be >= 1, got {max_skipped}")
        self.mode, self.max_skipped, self.skipped = mode, max_skipped, 0

    def skip(self, terms: dict[str, tuple[float, Tensor]], step: int) -> bool:
        """True if this step must be skipped; raises :class:`NonFiniteLossError` when the run must stop."""
        bad = nonfinite_terms(terms)
        if not bad:
            return False
        values = ", ".join(f"{name}={terms[name][1].detach().float().mean().item():g}" for name in bad)
        hint = ("lower the learning rate, set trainer.gradient_clip_val, or check the inputs; "
                "loss.on_nonfinite=skip skips such steps")
        if self.mode == "raise":
            raise NonFiniteLossError(f"step {step}: non-finite loss ({values}); {hint}")
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise NonFiniteLossError(
                f"step {step}: {self.skipped} steps skipped for non-finite losses (loss.max_skipped_steps="
                f"{self.max_skipped}), last: {values}; the run has diverged: {hint.split('; ')[0]}"
            )
        return True
