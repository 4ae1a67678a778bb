"""The euc epilogue ``Σ_p sqrt(relu(d_p)) / P`` over a stack of per-part squared distances, in one pass.

Eager PyTorch needs one pass per element-wise step (sqrt, sum, divide); an inductor-compiled kernel reads the
``[P, rows, cols]`` stack once and writes the result once, which at OU-MVLP size is the difference between ~1.25x
and ~1.0x the bare products (``bench/eval_scale.py``). Compiling costs seconds (a C++ compiler is needed), so it is
used only where the products take far longer: ``GAITKD_EVAL_COMPILE`` = ``auto`` (default: from
``COMPILE_MIN_FLOP`` of products up), ``1`` (always) or ``0`` (never). If compiling fails, a warning is given
once and the eager passes are used; the numbers agree to float32 rounding either way.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

# Products (2·P·n_query·n_gallery·(C+2) FLOP) from which `auto` compiles: ~30 s of GEMMs on the 2-core dev machine,
# where a first compile takes ~5-10 s and saves ~20 % of the products.
COMPILE_MIN_FLOP = 1e13
_ENV = "GAITKD_EVAL_COMPILE"
_compiled: Callable | None = None
_failed = False


def _epilogue(stack: torch.Tensor, target: torch.Tensor, parts: float) -> None:
    target.copy_(stack.clamp_min(0.0).sqrt().sum(0) / parts)


def use_compiled(flop: float) -> bool:
    """Whether the compiled epilogue serves a distance computation of ``flop`` product FLOPs."""
    mode = os.environ.get(_ENV, "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"{_ENV} must be auto, 0 or 1, got {mode!r}")
    return not _failed and (mode == "1" or (mode == "auto" and flop >= COMPILE_MIN_FLOP))


def compiled_epilogue(stack: torch.Tensor, target: torch.Tensor, parts: int) -> bool:
    """``target = Σ_p sqrt(relu(stack[p])) / parts`` through the compiled kernel; False if it is unavailable."""
    global _compiled, _failed
    if _failed:
        return False
    try:
        if _compiled is None:
            _compiled = torch.compile(_epilogue, dynamic=True, fullgraph=True)
        _compiled(stack, target, float(parts))
        return True
    except Exception as err:  # no compiler, unsupported device, ...: the eager passes give the same numbers
        _failed = True
        warnings.warn(f"gaitkd: compiled distance epilogue unavailable ({type(err).__name__}: {err}); "
                      f"using eager passes (set {_ENV}=0 to skip the attempt)", stacklevel=2)
        return False
