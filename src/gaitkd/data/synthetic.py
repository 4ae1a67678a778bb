"""Synthetic CASIA-B: procedural walking silhouettes written in OpenGait's pkl layout, deterministic and cached.

Owns rasterising the capsule bodies of ``walker.py`` (signed distance fields on the pixel grid of all frames at once),
segmentation-like nuisances, OpenGait's per-frame normalisation (crop rows to the body, height -> ``height`` px,
centre on the column where the cumulative mass passes half) and the dataset tree
``root/<id>/<type>/<view>/<view>.pkl`` (pickled uint8 ``[T, height, width]``) + ``partition.json`` + ``synthetic.json``.

Seeding: identity from ``(seed, id)``, walk (style jitter, bag, coat) from ``(seed, id, type)``, camera nuisances
(start phase, length, view/aspect jitter, segmentation noise) from ``(seed, id, type, view)``, so any subset of the tree
regenerates bit-identically in any order.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gaitkd.data.walker import Capsules, body_capsules, sample_identity, sample_walk

CASIA_TYPES: tuple[str, ...] = tuple(f"nm-0{i}" for i in range(1, 7)) + ("bg-01", "bg-02", "cl-01", "cl-02")
CASIA_VIEWS: tuple[str, ...] = tuple(f"{a:03d}" for a in range(0, 181, 18))
FORMAT_VERSION = 1
_CONDITIONS = {"nm": 0, "bg": 1, "cl": 2}
_TYPE_RE = re.compile(r"^(nm|bg|cl)-(\d\d)$")
_EDGE_PX = 1.2  # width of the soft (anti-aliased) edge ramp, like cubic down-sizing of a binary mask
_PAD_ROWS, _PAD_COLS = 4, 10  # canvas px around the body: room for segmentation noise and the mass-centred crop


# ----------------------------------------------------------------------------------------------------- rasterising
def _union_sdf(c: Capsules, rows: int, cols: int) -> np.ndarray:
    """Signed distance (px, negative inside) to the union of capsules given in pixel coords -> ``[T, rows, cols]``.

    Each capsule is evaluated only on the pixel block its swept area covers over all frames.
    """
    t = c.p0.shape[1]
    sd = np.full((t, rows, cols), 1e3, np.float32)
    ys = np.arange(rows, dtype=np.float32) + 0.5
    xs = np.arange(cols, dtype=np.float32) + 0.5
    for (x0, y0), (x1, y1), r0, r1 in zip(c.p0.transpose(0, 2, 1), c.p1.transpose(0, 2, 1), c.r0, c.r1):
        rmax = np.maximum(r0, r1).max() + 4.0  # + room for the edge noise added later
        ra, rb = int(max(min(y0.min(), y1.min()) - rmax, 0)), int(min(max(y0.max(), y1.max()) + rmax + 1, rows))
        ca, cb = int(max(min(x0.min(), x1.min()) - rmax, 0)), int(min(max(x0.max(), x1.max()) + rmax + 1, cols))
        if ra >= rb or ca >= cb:
            continue
        dx = xs[None, None, ca:cb] - x0[:, None, None]  # [T, 1, w]
        dy = ys[None, ra:rb, None] - y0[:, None, None]  # [T, h, 1]
        ex, ey = (x1 - x0)[:, None, None], (y1 - y0)[:, None, None]
        inv = 1.0 / np.maximum(ex * ex + ey * ey, 1e-6)
        proj = dx * (ex * inv) + dy * (ey * inv)  # [T, h, w] position along the axis, 0..1 on the segment
        np.clip(proj, 0.0, 1.0, out=proj)
        # In-place arithmetic: a handful of [T, h, w] temporaries instead of one per operation.
        qx = proj * ex
        np.subtract(dx, qx, out=qx)
        qy = proj * ey
        np.subtract(dy, qy, out=qy)
        qx *= qx
        qy *= qy
        qx += qy
        d = np.sqrt(qx, out=qx)
        proj *= (r1 - r0)[:, None, None]
        proj += r0[:, None, None]
        d -= proj
        block = sd[:, ra:rb, ca:cb]
        np.minimum(block, d, out=block)
    return sd


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int]) -> np.ndarray:
    """Smooth noise ``[T, H, W]`` (about unit variance): a coarse random grid, linearly interpolated in t, y and x."""
    t, h, w = shape
    coarse = rng.standard_normal(tuple(k + 1 for k in cells)).astype(np.float32)  # [a+1, b+1, c+1]

    def grid(n: int, k: int) -> np.ndarray:
        return np.linspace(0.0, k, n, dtype=np.float32)

    keys = _lerp_rows(_lerp_rows(coarse, grid(h, cells[1])).transpose(0, 2, 1), grid(w, cells[2]))  # [a+1, W, H]
    keys = keys.transpose(0, 2, 1).reshape(1, len(coarse), h * w)
    return _lerp_rows(keys, grid(t, cells[0]))[0].reshape(t, h, w)


def _blobs(rng: np.random.Generator, sd: np.ndarray, count: int, radius: tuple[float, float], carve: bool) -> None:
    """Carve holes into (``carve``) or add false-positive blobs to ``sd`` ``[T, H, W]`` in place, a few frames each."""
    t, h, w = sd.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    for _ in range(count):
        start = int(rng.integers(t))
        stop = min(t, start + int(rng.integers(1, max(2, t // 3))))
        cy, cx = rng.uniform(0.1 * h, 0.95 * h), rng.uniform(0.3 * w, 0.7 * w)
        d = np.hypot(yy - cy, xx - cx) - rng.uniform(*radius)
        part = sd[start:stop]
        if carve:
            np.maximum(part, -d, out=part)
        else:
            np.minimum(part, d + float(rng.uniform(0.0, 3.0)), out=part)


def _lerp_rows(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linearly interpolate rows of ``a`` ``[T, R, C]`` at positions ``pos`` (``[T, n]`` per frame, or shared ``[n]``).

    Returns ``[T, n, C]``; positions outside ``[0, R-1]`` blend with zeros. Whole rows are gathered from the flat
    ``[T*R, C]`` view, which is much cheaper than element-wise fancy indexing.
    """
    t, r, c = a.shape
    pos = np.broadcast_to(pos, (t, pos.shape[-1]))
    i0 = np.floor(pos).astype(np.intp)
    frac = (pos - i0).astype(np.float32)
    flat = a.reshape(t * r, c)
    base = (np.arange(t) * r)[:, None]
    out = np.zeros((t, pos.shape[1], c), np.float32)
    for idx, wgt in ((i0, 1.0 - frac), (i0 + 1, frac)):
        wgt = wgt * ((idx >= 0) & (idx < r))
        out += np.take(flat, (base + np.clip(idx, 0, r - 1)).ravel(), axis=0).reshape(out.shape) * wgt[..., None]
    return out


def crop_and_centre(cov: np.ndarray, height: int, width: int, threshold: float = 0.1) -> np.ndarray:
    """OpenGait's pretreatment on soft masks ``[T, Hc, Wc]`` -> ``[T, height, width]`` (float, same scale as ``cov``).

    Per frame: crop rows to the silhouette (rows with a value above ``threshold``), resize to ``height`` keeping the
    aspect ratio, centre on the first column where the cumulative column mass exceeds half of the total, keep
    ``width`` columns (zeros outside the image). Resampling is bilinear at pixel-centre-aligned positions (no
    anti-aliasing, like cv2's non-area modes). Every frame must have at least one row above ``threshold``.
    """
    body = cov.max(2) > threshold  # [T, Hc]
    first = np.argmax(body, axis=1)
    last = body.shape[1] - 1 - np.argmax(body[:, ::-1], axis=1)
    step = (last - first + 1) / height  # canvas px per output px, [T]
    ys = first[:, None] + (np.arange(height) + 0.5) * step[:, None] - 0.5
    rows = _lerp_rows(cov, ys)  # [T, height, Wc]
    mass = np.cumsum(rows.sum(1), axis=1)
    centre = np.argmax(mass > 0.5 * mass[:, -1:], axis=1)
    xs = centre[:, None] + (np.arange(width) - width // 2) * step[:, None]
    return np.ascontiguousarray(_lerp_rows(rows.transpose(0, 2, 1), xs).transpose(0, 2, 1))


_crop_and_centre = crop_and_centre  # former private name, kept for callers that still use it


def render(caps: Capsules, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Rasterise ``caps`` (body units) into OpenGait-normalised silhouettes: uint8 ``[T, height, width]``."""
    lo = np.minimum(caps.p0[..., 1] - caps.r0, caps.p1[..., 1] - caps.r1).min(0)  # [T]
    hi = np.maximum(caps.p0[..., 1] + caps.r0, caps.p1[..., 1] + caps.r1).max(0)
    u0, u1 = caps.p0[..., 0], caps.p1[..., 0]
    umid = 0.5 * (np.minimum(u0, u1).min(0) + np.maximum(u0, u1).max(0))
    scale = (height / (hi - lo)).astype(np.float32)  # px per body unit, [T]: the body fills `height` rows
    aspect = np.float32(np.exp(rng.normal(0.0, 0.04)))  # lens/segmentation width jitter
    rows, cols = height + 2 * _PAD_ROWS, width + 2 * _PAD_COLS

    def to_px(p: np.ndarray) -> np.ndarray:
        return np.stack([(p[..., 0] - umid) * scale * aspect + cols / 2, (hi - p[..., 1]) * scale + _PAD_ROWS], -1)

    sd = _union_sdf(Capsules(to_px(caps.p0), to_px(caps.p1), caps.r0 * scale, caps.r1 * scale), rows, cols)
    sd += rng.uniform(0.2, 0.9) * _smooth_noise(rng, sd.shape, (max(1, len(sd) // 4), 8, 6))
    _blobs(rng, sd, int(rng.poisson(1.5)), (0.8, 2.5), carve=True)
    _blobs(rng, sd, int(rng.poisson(0.8)), (0.8, 2.0), carve=False)
    # Segmentation noise changes the extent of the mask; the crop/resize below re-normalises it, as in OpenGait.
    out = crop_and_centre(np.clip(0.5 - sd / _EDGE_PX, 0.0, 1.0), height, width)
    # Speckle: isolated flipped pixels from a noisy background subtraction.
    flat = out.reshape(-1)
    flip = rng.integers(flat.size, size=rng.binomial(flat.size, rng.uniform(0.0, 0.0015)))
    flat[flip] = 1.0 - flat[flip]
    return np.rint(out * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ sequences
def _type_code(type_: str) -> int:
    m = _TYPE_RE.match(type_)
    if m is None:
        raise ValueError(f"sequence type {type_!r} is not CASIA-B style; expected 'nm-XX', 'bg-XX' or 'cl-XX'")
    return 100 * _CONDITIONS[m.group(1)] + int(m.group(2))


def sequence(
    seed: int, sid: int, type_: str, view: str, frames: tuple[int, int] = (40, 80), height: int = 64, width: int = 44
) -> np.ndarray:
    """Silhouettes of subject ``sid`` (1-based), walk ``type_`` (``nm-01``...), camera ``view`` (``'090'``).

    Returns uint8 ``[T, height, width]`` with ``frames[0] <= T <= frames[1]``; a pure function of its arguments.
    """
    # A distinct leading tag per level: numpy's SeedSequence maps [a, b] and [a, b, 0] to the same state.
    code = _type_code(type_)
    ident = sample_identity(np.random.default_rng([seed, 1, sid]))
    walk = sample_walk(np.random.default_rng([seed, 2, sid, code]), ident, type_[:2])
    rng = np.random.default_rng([seed, 3, sid, code, int(view)])
    n = int(rng.integers(frames[0], frames[1] + 1))
    phase = 2 * np.pi * (rng.random() + np.arange(n) / walk["cycle_frames"])
    view_deg = int(view) + rng.normal(0.0, 1.5)  # cameras are never exactly at the nominal angle
    return render(body_capsules(walk, phase, view_deg), height, width, rng)


# --------------------------------------------------------------------------------------------------------- layout
def _params(
    num_ids: int,
    views: Sequence[str | int] | int,
    types: Sequence[str],
    frames: Sequence[int],
    seed: int,
    height: int,
    width: int,
    num_train: int | None,
    first_id: int,
) -> dict:
    """Validate the generation parameters and return them in canonical (JSON, hashable) form."""
    if isinstance(views, int):  # a count: evenly spread over the CASIA-B views
        if not 1 <= views <= len(CASIA_VIEWS):
            raise ValueError(f"views={views}: expected a view count in 1..{len(CASIA_VIEWS)} or a list of angles")
        views = [CASIA_VIEWS[i] for i in np.linspace(0, len(CASIA_VIEWS) - 1, views).round().astype(int)]
    try:
        views = [f"{int(v):03d}" for v in views]
    except ValueError as err:
        raise ValueError(f"views={views}: expected view angles such as '000', '090' or 90") from err
    types = [str(t) for t in types]
    for t in types:
        _type_code(t)
    if not views or not types or len(set(views)) < len(views) or len(set(types)) < len(types):
        raise ValueError(f"views={views}, types={types}: expected non-empty lists without duplicates")
    lo, hi = (int(f) for f in frames)
    if not 1 <= lo <= hi:
        raise ValueError(f"frames={frames}: expected (min, max) with 1 <= min <= max")
    if num_ids < 1 or first_id < 1 or first_id + num_ids - 1 > 999:
        raise ValueError(f"num_ids={num_ids}, first_id={first_id}: ids must be within 001..999")
    num_train = round(0.6 * num_ids) if num_train is None else int(num_train)
    if not 0 <= num_train <= num_ids:
        raise ValueError(f"num_train={num_train}: expected 0..num_ids={num_ids}")
    if seed < 0:
        raise ValueError(f"seed={seed}: expected a non-negative integer")
    if height < 8 or width < 8:
        raise ValueError(f"height={height}, width={width}: expected at least 8 px")
    return {"num_ids": int(num_ids), "views": views, "types": types, "frames": [lo, hi], "seed": int(seed),
            "height": int(height), "width": int(width), "num_train": num_train, "first_id": int(first_id)}


def _write_subject(args: tuple[Path, int, dict]) -> int:
    """Write every sequence of one subject (a worker task); returns the number of pkls written."""
    root, sid, p = args
    for type_ in p["types"]:
        for view in p["views"]:
            arr = sequence(p["seed"], sid, type_, view, tuple(p["frames"]), p["height"], p["width"])
            folder = root / f"{sid:03d}" / type_ / view
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"{view}.pkl", "wb") as f:
                pickle.dump(arr, f, protocol=4)
    return len(p["types"]) * len(p["views"])


def generate(
    root: str | Path,
    num_ids: int = 50,
    views: Sequence[str | int] | int = CASIA_VIEWS,
    types: Sequence[str] = CASIA_TYPES,
    frames: Sequence[int] = (40, 80),
    seed: int = 0,
    height: int = 64,
    width: int = 44,
    num_train: int | None = None,
    first_id: int = 1,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write a synthetic CASIA-B tree under ``root`` and return ``root``.

    Subjects ``first_id .. first_id+num_ids-1`` (zero-padded to 3 digits), ``types`` (``nm-XX``/``bg-XX``/``cl-XX``),
    ``views`` (angle strings/ints, or a count spread evenly over ``CASIA_VIEWS``), ``frames=(min, max)`` per
    sequence, pkls of uint8 ``[T, height, width]``. Writes ``<id>/<type>/<view>/<view>.pkl``, ``partition.json``
    (first ``num_train`` ids train, default ``round(0.6 * num_ids)``, the rest test) and, last, the stamp
    ``synthetic.json``. ``workers`` processes (default: all CPUs) write whole subjects; the output does not depend
    on it.
    """
    p = _params(num_ids, views, types, frames, seed, height, width, num_train, first_id)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ids = list(range(p["first_id"], p["first_id"] + p["num_ids"]))
    tasks = [(root, sid, p) for sid in ids]
    workers = max(1, min(workers or os.cpu_count() or 1, len(ids)))
    from rich.progress import Progress  # imported lazily: only needed when writing

    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"synthetic CASIA-B -> {root}", total=len(ids) * len(p["types"]) * len(p["views"]))
        if workers == 1:
            results = map(_write_subject, tasks)
            for n in results:
                bar.advance(job, n)
        else:
            with ProcessPoolExecutor(workers) as pool:
                for n in pool.map(_write_subject, tasks):
                    bar.advance(job, n)
    names = [f"{sid:03d}" for sid in ids]
    split = {"TRAIN_SET": names[: p["num_train"]], "TEST_SET": names[p["num_train"] :]}
    (root / "partition.json").write_text(json.dumps(split, indent=1))
    (root / "synthetic.json").write_text(json.dumps(_stamp(p), indent=1))
    return root


_GENERATE_SIGNATURE = inspect.signature(generate)


def _stamp(p: dict) -> dict:
    return {"generator": "gaitkd.data.synthetic", "format_version": FORMAT_VERSION, "params": p}


def generation_params(cache_dir: str | Path, **params) -> tuple[dict, dict]:
    """``ensure_synthetic``'s arguments -> (validated generation parameters in canonical form, the run options
    ``progress`` / ``workers``); generates nothing. An unknown parameter is a ``TypeError``, a bad value a
    ``ValueError``."""
    bound = _GENERATE_SIGNATURE.bind(cache_dir, **params)  # generate's defaults are the single source
    bound.apply_defaults()
    run = {k: bound.arguments.pop(k) for k in ("progress", "workers")}
    del bound.arguments["root"]
    return _params(**bound.arguments), run


def ensure_synthetic(cache_dir: str | Path, **params) -> Path:
    """Return ``cache_dir/<hash of params>``, generating it first unless a matching stamp is already there.

    ``params`` are those of :func:`generate` (``progress``/``workers`` do not enter the hash). Generation goes to a
    temporary sibling folder renamed into place when complete, so an interrupted run never leaves a dataset that
    looks finished, and concurrent callers (e.g. several ranks) end up sharing one valid copy.
    """
    p, run = generation_params(cache_dir, **params)
    stamp = _stamp(p)
    key = hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:12]
    cache_dir = Path(cache_dir)
    target = cache_dir / key
    if _stamp_matches(target, stamp):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        generate(tmp, **p, **run)
        if not _stamp_matches(target, stamp):  # else another process finished first: use its copy
            if target.exists():  # stale copy (foreign stamp / interrupted deletion)
                shutil.rmtree(target)
            try:
                os.rename(tmp, target)
            except OSError:  # lost a rename race: fine if the winner's copy is valid
                if not _stamp_matches(target, stamp):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stamp_matches(folder: Path, stamp: dict) -> bool:
    try:
        return json.loads((folder / "synthetic.json").read_text()) == stamp
    except (OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m gaitkd.data.synthetic ROOT [--ids N] [--views 000 090 ...] [--frames 40 80] ...``."""
    ap = argparse.ArgumentParser(description="Write a synthetic CASIA-B silhouette dataset in OpenGait pkl layout.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--ids", type=int, default=50, help="number of subjects")
    ap.add_argument("--num-train", type=int, default=None, help="training subjects (default 60%%)")
    ap.add_argument("--views", nargs="+", default=list(CASIA_VIEWS), help="view angles (default: the 11 CASIA-B)")
    ap.add_argument("--num-views", type=int, default=None, help="instead of --views: N views spread over 000..180")
    ap.add_argument("--types", nargs="+", default=list(CASIA_TYPES))
    ap.add_argument("--frames", nargs=2, type=int, default=[40, 80], metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=44)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    views: list[str] | int = a.views if a.num_views is None else a.num_views
    generate(a.root, num_ids=a.ids, views=views, types=a.types, frames=tuple(a.frames), seed=a.seed,
             height=a.height, width=a.width, num_train=a.num_train, workers=a.workers, progress=not a.quiet)


if __name__ == "__main__":
    main()
