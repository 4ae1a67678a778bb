"""Part-wise distances between gait embeddings, computed exactly as OpenGait's ``cuda_dist``.

Owns the one distance every evaluation protocol uses (fixtures README §1):

* ``euc``: the mean over the P parts of per-part Euclidean distances, in float32 with the expanded
  form ``sqrt(relu(|x|² + |y|² − 2 x·y))`` (so identical vectors get ~1e-3, not 0, like OpenGait);
* ``cos``: ``1 − mean_p cos(x_p, y_p)`` with part vectors normalised as ``x / max(|x|, 1e-12)``.

Work is done as batched matrix products over parts, in row chunks of ``x`` so the ``[P, chunk, n2]``
intermediate of ``euc`` stays bounded for large test sets.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Metric = Literal["euc", "cos"]
METRICS: tuple[str, ...] = ("euc", "cos")

# Elements of the [P, chunk, n2] float32 intermediate per chunk (~128 MB); sized for CPU caches and GPU memory alike.
_MAX_CHUNK_ELEMENTS = 1 << 25


def as_embeddings(x: torch.Tensor | np.ndarray, name: str = "embeddings") -> torch.Tensor:
    """Return ``x`` as a float32 torch tensor ``[N, C, P]``; raise ``ValueError`` for any other rank."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array [N, C, P], got {type(x).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name}: expected shape [N, C, P], got {tuple(t.shape)}")
    return t.detach().to(torch.float32)


def _auto_chunk(n2: int, parts: int) -> int:
    return max(1, _MAX_CHUNK_ELEMENTS // max(1, n2 * parts))


def pairwise_distance(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    metric: Metric = "euc",
    chunk: int | None = None,
) -> torch.Tensor:
    """OpenGait ``cuda_dist``: distances between every row of ``x`` and every row of ``y``.

    Args:
        x: ``[n1, C, P]`` embeddings (torch or numpy; cast to float32).
        y: ``[n2, C, P]`` embeddings on the same device as ``x``.
        metric: ``"euc"`` or ``"cos"``.
        chunk: rows of ``x`` per block; default keeps the ``[P, chunk, n2]`` intermediate near 2^25 elements.

    Returns:
        ``[n1, n2]`` float32 distances (smaller = more similar), on ``x``'s device.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x, y = as_embeddings(x, "x"), as_embeddings(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must share [C, P]: got x {tuple(x.shape)} and y {tuple(y.shape)}")
    n1, channels, parts = x.shape
    n2 = y.shape[0]
    out = torch.empty(n1, n2, dtype=torch.float32, device=x.device)
    if n1 == 0 or n2 == 0:
        return out
    step = chunk if chunk is not None else _auto_chunk(n2, parts)
    if step < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    if metric == "cos":
        # Σ_p <x̂_p, ŷ_p> is a single GEMM over the flattened (C, P) axis.
        yf = F.normalize(y, p=2, dim=1, eps=1e-12).reshape(n2, channels * parts)
        for s in range(0, n1, step):
            xf = F.normalize(x[s : s + step], p=2, dim=1, eps=1e-12).reshape(-1, channels * parts)
            out[s : s + step] = 1.0 - (xf @ yf.T) / parts
        return out

    yp = y.permute(2, 0, 1)  # [P, n2, C]
    y_sq = yp.pow(2).sum(-1).unsqueeze(1)  # [P, 1, n2]
    for s in range(0, n1, step):
        xp = x[s : s + step].permute(2, 0, 1)  # [P, b, C]
        x_sq = xp.pow(2).sum(-1).unsqueeze(2)  # [P, b, 1]
        sq = torch.baddbmm(x_sq + y_sq, xp, yp.transpose(1, 2), alpha=-2.0)  # [P, b, n2]
        out[s : s + step] = sq.clamp_(min=0.0).sqrt_().sum(0) / parts
    return out
