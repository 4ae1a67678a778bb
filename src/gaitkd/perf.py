"""Speed switches of a training step (the ``perf`` config group in ``conf/run.yaml``), all off by default.

``bench/suite.py --sections switches`` measures each one against the defaults in the same run and reports its
exactness (max abs difference of the outputs / loss); the results are in ``bench/RESULTS.md``.

- ``channels_last``: the student's and teachers' conv weights in channels-last memory format (4-D weights
  ``channels_last``, 5-D ``channels_last_3d``), so the convolutions run (and hand on activations) in that layout.
  Same numbers up to float rounding order.
- ``compile_student`` / ``compile_teacher``: the forward a training step calls goes through ``torch.compile``
  (compiled on the first step: seconds to minutes on a CPU). The modules themselves, their checkpoints, the test
  step and the export stay plain. Same numbers up to float rounding order (fused kernels).
- ``teacher_autocast``: ``null`` | ``bf16``: the teachers' forward under ``torch.autocast(dtype=bfloat16)``; its
  outputs are cast back to float32. **Changes the numbers**: teacher outputs differ by bf16 rounding (~3 significant
  digits), so the KD terms differ accordingly.
- ``teacher_grad_mode``: ``inference`` (``torch.inference_mode``) | ``no_grad``: how the teachers' forward is kept
  out of autograd. Both exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from gaitkd.errors import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}
GRAD_MODES = ("inference", "no_grad")


@dataclass(frozen=True)
class Perf:
    """The ``perf`` switches (see the module docstring); ``Perf()`` is the reference configuration."""

    channels_last: bool = False
    compile_student: bool = False
    compile_teacher: bool = False
    teacher_autocast: str | None = None
    teacher_grad_mode: str = "inference"

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Perf:
        """Validated switches from the ``perf`` config node (``None``: all defaults); errors name the key."""
        node = dict(node or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"perf.{unknown[0]}: unknown switch; perf takes {', '.join(sorted(known))}")
        perf = cls(**node)
        if perf.teacher_autocast is not None and perf.teacher_autocast not in AUTOCAST_DTYPES:
            raise ConfigError(f"perf.teacher_autocast={perf.teacher_autocast}: expected null or one of "
                              f"{', '.join(AUTOCAST_DTYPES)}")
        if perf.teacher_grad_mode not in GRAD_MODES:
            raise ConfigError(f"perf.teacher_grad_mode={perf.teacher_grad_mode}: expected one of "
                              f"{', '.join(GRAD_MODES)}")
        return perf

    def teacher_context(self, device_type: str) -> contextlib.ExitStack:
        """The context a teacher forward runs in: out of autograd, and autocast when switched on."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode() if self.teacher_grad_mode == "inference" else torch.no_grad())
        if self.teacher_autocast is not None:
            stack.enter_context(torch.autocast(device_type, dtype=AUTOCAST_DTYPES[self.teacher_autocast]))
        return stack


def to_channels_last(model: nn.Module) -> nn.Module:
    """Conv weights in channels-last layout, in place (4-D ``channels_last``, 5-D ``channels_last_3d``)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            fmt = torch.channels_last if module.weight.dim() == 4 else torch.channels_last_3d
            module.weight.data = module.weight.data.contiguous(memory_format=fmt)
    return model


def forward_fn(model: nn.Module, compile_it: bool) -> Callable[..., Any]:
    """What a training step calls for ``model``: the module itself or its ``torch.compile`` wrapper. The wrapper is
    returned, not stored on the model, so parameters and state-dict keys stay the plain model's."""
    return torch.compile(model) if compile_it else model
