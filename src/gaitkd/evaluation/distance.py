"""Part-wise distances between gait embeddings, computed exactly as OpenGait's ``cuda_dist``.

Owns the one distance every evaluation protocol uses (fixtures README §1):

* ``euc``: the mean over the P parts of per-part Euclidean distances, in float32 with the expanded
  form ``sqrt(relu(|x|² + |y|² − 2 x·y))`` (so identical vectors get ~1e-3, not 0, like OpenGait);
* ``cos``: ``1 − mean_p cos(x_p, y_p)`` with part vectors normalised as ``x / max(|x|, 1e-12)``.

:class:`GalleryDistances` lays a gallery out once, part-major, and then serves blocks of queries. For ``euc`` each part
is one GEMM over augmented rows, ``[x, |x|², 1] · [−2y, 1, |y|²] = |x|² + |y|² − 2 x·y``, so no broadcast temporaries
exist; the GEMM output, its sqrt and the accumulation over parts stay inside one cache-resident tile
(``_TILE_ROWS × _TILE_COLS``) and every buffer is allocated once. The cost is the per-part products plus two
element-wise passes; ``bench/eval_scale.py`` measures it against the bare products.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Metric = Literal["euc", "cos"]
METRICS: tuple[str, ...] = ("euc", "cos")

# One euc tile: the [rows, cols] float32 GEMM output (16 MB; each side a multiple of 16 floats, see _even) that is
# rooted and added into the result while it is still in the last-level cache. Measured on the 2-core dev machines
# (bench/eval_scale.py, quiet): smaller tiles make the GEMMs slower or are within noise; one batched GEMM per tile
# into a [P, rows, cols] stack is 13 % slower than P separate GEMMs; a compiled (torch.compile) or C one-pass
# epilogue saved 0-2 % of the products (bench/README.md).
_TILE_ROWS, _TILE_COLS = 2048, 2048
# Rows laid out per step when building the gallery or a query block (bounds the layout's temporaries), and rows
# per cache-resident step inside one layout (64 x 16 parts x 258 floats = 1 MB).
_LAYOUT_ROWS, _LAYOUT_CACHE_ROWS = 4096, 64


def as_embeddings(x: torch.Tensor | np.ndarray, name: str = "embeddings") -> torch.Tensor:
    """Return ``x`` as a float32 torch tensor ``[N, C, P]``; raise ``ValueError`` for any other rank."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array [N, C, P], got {type(x).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name}: expected shape [N, C, P], got {tuple(t.shape)}")
    return t.detach().to(torch.float32)


def _layout(emb: torch.Tensor, metric: str, side: str, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write one side's GEMM operand for the rows ``rows`` (int64 indices) of ``emb [N, C, P]`` into ``out``.

    euc: ``out [P, n, C + 2]``, part-major rows ``[x_p, |x_p|², 1]`` (``side="query"``) or ``[−2 y_p, 1, |y_p|²]``
    (gallery), so part ``p`` of a row range, ``out[p, rows]``, is a contiguous GEMM operand. cos: ``out [n, C·P]``,
    part vectors L2-normalised, flattened in ``(C, P)`` order. Rows are gathered and written in small cache-resident
    steps; the norms computed on the way double as the finiteness check.
    """
    step, (channels, parts) = _LAYOUT_CACHE_ROWS, emb.shape[1:]
    gathered = torch.empty(min(step, len(rows)), channels, parts, dtype=torch.float32, device=emb.device)
    parted, squares = (torch.empty(len(gathered), parts, channels, dtype=torch.float32, device=emb.device)
                       for _ in range(2))
    for s in range(0, len(rows), step):
        src = gathered[: len(rows[s : s + step])]
        torch.index_select(emb, 0, rows[s : s + step], out=src)
        if metric == "cos":
            norms = torch.linalg.vector_norm(src, dim=1, keepdim=True)  # [b, 1, P], as F.normalize
            _require_finite(norms, side, len(rows))
            torch.div(src, norms.clamp_min(1e-12), out=out[s : s + step].view(src.shape))
            continue
        # The transposition [b, C, P] -> [P, b, C] in two copies: inside the cache-resident step to [b, P, C], then
        # runs of C contiguous floats into the operand. One strided copy straight into the operand (whose parts lie
        # far apart) was 1.3x slower warm and 2.7x inside `evaluate` (measured, 18,200 rows).
        part = parted[: len(src)]
        part.copy_(src.transpose(1, 2))
        sq = torch.mul(part, part, out=squares[: len(src)]).sum(-1)  # [b, P]: |x_p|² = Σ_c x², as OpenGait
        _require_finite(sq, side, len(rows))
        dst = out[:, s : s + step]
        if side == "query":
            dst[..., :channels].copy_(part.transpose(0, 1))
            dst[..., channels], dst[..., channels + 1] = sq.T, 1.0
        else:
            torch.mul(part.transpose(0, 1), -2.0, out=dst[..., :channels])
            dst[..., channels], dst[..., channels + 1] = 1.0, sq.T
    return out


def _even(n: int, most: int, align: int = 16) -> int:
    """The tile length that cuts ``n`` into as few tiles of at most ``most`` (a multiple of ``align``) as possible,
    of nearly one size (no thin edge tile: a GEMM a few columns wide runs far below the machine's rate), rounded up
    to a multiple of ``align`` floats: an odd tile width (2,023 for an 18,200-wide gallery) made the GEMMs ~10 %
    slower than a 2,032-wide one (measured, 2-core dev machine)."""
    length = -(-n // -(-n // most))
    return min(most, -(-length // align) * align)


def _require_finite(norms: torch.Tensor, side: str, total: int) -> None:
    if not torch.isfinite(norms).all():
        raise ValueError(f"{side} embeddings: some of the {total} contain NaN or inf (did training diverge?)")


def _rows(index: torch.Tensor | np.ndarray | None, n: int, device: torch.device) -> torch.Tensor:
    if index is None:
        return torch.arange(n, device=device)
    rows = torch.as_tensor(np.asarray(index, dtype=np.int64) if not isinstance(index, torch.Tensor) else index)
    if rows.dim() != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
        raise ValueError(f"index must be a 1-d array of row numbers in [0, {n}), got shape {tuple(rows.shape)}")
    return rows.to(device=device, dtype=torch.int64)


class GalleryDistances:
    """Distances from blocks of queries to one fixed gallery: ``dists(x [b, C, P]) -> [b, n_gallery]``.

    Args:
        gallery: ``[N, C, P]`` embeddings (torch or numpy; cast to float32).
        metric: ``"euc"`` or ``"cos"``.
        index: optional row numbers selecting the gallery out of ``gallery`` (gathered on the fly, so
            ``gallery[index]`` never exists as a copy).

    ``__call__(queries, out=None, index=None)``: distances of ``queries[index]`` (all rows if ``None``) to the
    gallery, written into ``out`` (float32 ``[n, n_gallery]``, contiguous; allocated if ``None``) and returned.
    Buffers are reused across calls, so one instance serves one thread.
    """

    def __init__(self, gallery: torch.Tensor | np.ndarray, metric: Metric = "euc", index: np.ndarray | None = None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        emb = as_embeddings(gallery, "gallery")
        self.metric, self.channels, self.parts, self.device = metric, emb.shape[1], emb.shape[2], emb.device
        rows = _rows(index, len(emb), emb.device)
        self.size = len(rows)
        self._g = _layout(emb, metric, "gallery", rows, self._operand(self.size))
        self._row_dim = 1 if metric == "euc" else 0  # the row axis of an operand (see _operand)
        self._q = self._operand(0)
        self._tile = torch.empty(0, dtype=torch.float32, device=emb.device)
        self.redone = 0  # euc tiles redone with the relu (a rounding-negative square: near-identical vectors)

    def _operand(self, n: int) -> torch.Tensor:
        shape = (n, self.channels * self.parts) if self.metric == "cos" else (self.parts, n, self.channels + 2)
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def _rows_of(self, operand: torch.Tensor, n: int) -> torch.Tensor:
        return operand.narrow(self._row_dim, 0, n)

    def __call__(
        self, queries: torch.Tensor | np.ndarray, out: torch.Tensor | None = None, index: np.ndarray | None = None
    ) -> torch.Tensor:
        x = as_embeddings(queries, "queries")
        if x.shape[1:] != (self.channels, self.parts):
            raise ValueError(
                f"queries and gallery must share [C, P]: got queries {tuple(x.shape)} and gallery "
                f"[{self.size}, {self.channels}, {self.parts}]"
            )
        rows = _rows(index, len(x), x.device)
        n = len(rows)
        if out is None:
            out = torch.empty(n, self.size, dtype=torch.float32, device=self.device)
        elif out.shape != (n, self.size) or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous [{n}, {self.size}] tensor, got {tuple(out.shape)}")
        if n == 0 or self.size == 0:
            return out
        if self._q.shape[self._row_dim] < min(n, _LAYOUT_ROWS):
            self._q = self._operand(min(n, _LAYOUT_ROWS))
        for s in range(0, n, _LAYOUT_ROWS):
            block = rows[s : s + _LAYOUT_ROWS]
            q = _layout(x, self.metric, "query", block, self._rows_of(self._q, len(block)))
            (self._cos if self.metric == "cos" else self._euc)(q, out[s : s + _LAYOUT_ROWS])
        return out

    def _cos(self, q: torch.Tensor, out: torch.Tensor) -> None:
        torch.mm(q, self._g.T, out=out)  # Σ_p <x̂_p, ŷ_p>: one GEMM over the flattened (C, P) axis
        out.div_(self.parts).neg_().add_(1.0)  # 1 − s / P, in OpenGait's order

    def _euc(self, q: torch.Tensor, out: torch.Tensor) -> None:
        rows, cols = _even(q.shape[1], _TILE_ROWS), _even(self.size, _TILE_COLS)
        if self._tile.numel() < rows * cols:
            self._tile = torch.empty(rows * cols, dtype=torch.float32, device=self.device)
        for r0 in range(0, q.shape[1], rows):
            qr = q[:, r0 : r0 + rows]
            for c0 in range(0, self.size, cols):
                g = self._g[:, c0 : c0 + cols]
                target = out[r0 : r0 + rows, c0 : c0 + cols]
                tile = self._tile[: target.numel()].view(target.shape)
                self._euc_tile(qr, g, tile, target, clamp=False)
                if torch.sum(target).isnan():  # a rounding-negative square somewhere (near-identical vectors)
                    self.redone += 1
                    self._euc_tile(qr, g, tile, target, clamp=True)
                target.div_(self.parts)

    def _euc_tile(self, q: torch.Tensor, g: torch.Tensor, tile: torch.Tensor, target: torch.Tensor, clamp: bool):
        """``target = Σ_p sqrt(relu(q_p g_pᵀ))`` through the cache-sized ``tile``, in part order as OpenGait.

        Without ``clamp`` the relu is skipped (one element-wise pass fewer): a square that rounding made negative
        then shows as NaN in ``target`` (inputs are finite), and the caller redoes the tile with ``clamp``.
        """
        for p in range(self.parts):
            torch.mm(q[p], g[p].T, out=tile)  # |x_p|² + |y_p|² − 2 x_p·y_p
            if clamp:
                tile.clamp_(min=0.0)
            if p == 0:
                torch.sqrt(tile, out=target)
            else:
                target.add_(tile.sqrt_())


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
        chunk: rows of ``x`` per block (default: all; memory stays bounded by the internal tiling anyway).

    Returns:
        ``[n1, n2]`` float32 distances (smaller = more similar), on ``x``'s device.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x, y = as_embeddings(x, "x"), as_embeddings(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must share [C, P]: got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dists = GalleryDistances(y, metric)
    out = torch.empty(x.shape[0], y.shape[0], dtype=torch.float32, device=x.device)
    step = chunk or max(1, x.shape[0])
    for s in range(0, x.shape[0], step):
        dists(x[s : s + step], out=out[s : s + step])
    return out
