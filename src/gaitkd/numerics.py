"""Non-finite losses: which loss component went NaN / inf at which step, and what the run does about it.

``loss.on_nonfinite=raise`` (default) stops the run with one message naming the components and the step;
``skip`` skips that optimisation step (no update: its gradients are dropped), counts it (``train/skipped_steps``)
and stops only after ``loss.max_skipped_steps`` such steps, so a run that diverged for good does not go on. A
skipped step still counts toward ``trainer.max_steps`` (Lightning's loop advances). Under DDP every rank must skip
the same steps or the gradient all-reduce waits forever: the check all-reduces every term's finiteness over the
ranks, so all of them skip (or raise) together when any one sees a non-finite loss, and the message names that rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from gaitkd.data.sampler import dist_rank_world
from gaitkd.errors import GaitKDError

NONFINITE_MODES = ("raise", "skip")


class NonFiniteLossError(GaitKDError, FloatingPointError):
    """A loss component is NaN or inf: the run stops instead of training on garbage."""


def term_table(terms: dict[str, tuple[float, Tensor]]) -> Tensor:
    """``[world_size, len(terms), 2]``: per process (one row without DDP) and term, ``(1.0 if finite, mean)``.

    Under DDP every rank fills its own row and one all-reduce (a collective: every rank must call it at the same
    step) gives all ranks the same table.
    """
    rows = torch.stack([torch.stack([torch.isfinite(x).all().to(x.dtype), x.mean()])
                        for x in (loss.detach().float() for _, loss in terms.values())])
    rank, world = dist_rank_world()
    if world == 1:
        return rows[None]
    table = rows.new_zeros((world, *rows.shape))
    table[rank] = rows  # the other rows stay 0 here; sums keep NaN / inf where they are
    dist.all_reduce(table)
    return table


def nonfinite_terms(terms: dict[str, tuple[float, Tensor]]) -> list[str]:
    """Names of the loss terms ``{name: (weight, loss)}`` that are not finite on some rank; one host sync."""
    if not terms:
        return []
    finite = term_table(terms)[..., 0].bool().all(0)
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
        if not terms:
            return False
        table = term_table(terms)
        if bool(table[..., 0].bool().all()):
            return False
        names, where = list(terms), "" if len(table) == 1 else " on rank {}"
        values = ", ".join(f"{names[t]}={table[r, t, 1].item():g}{where.format(r)}"
                           for r, t in (table[..., 0] == 0).nonzero().tolist())
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
