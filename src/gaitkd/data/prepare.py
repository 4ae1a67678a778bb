"""`gaitkd prepare`: raw silhouette frames -> OpenGait pkls, following OpenGait's ``datasets/pretreatment.py`` rule.

Owns finding the sequences of a raw dataset tree, decoding their frames (PNG/JPG/BMP folders, or one animated
GIF / WebP / TIFF file per sequence, read with PIL), the per-frame pretreatment (drop frames whose grey-value sum is
<= 10000, crop rows to the body, resize to ``img_size`` rows keeping the aspect, centre on the half-mass column, keep
``img_size`` columns with zero padding), writing ``<out>/<id>/<type>/<view>/<view>.pkl`` (pickled uint8
``[T, img_size, img_size]``) and the parallel, resumable driver with its summary.

How ``DATASET`` names a sequence (``id, type, view``):

* ``casia_b``, ``gait3d``, ``generic``: the last three folders of a frame folder, like OpenGait
  (CASIA-B ``<id>/<type>/<view>/*.png``; Gait3D ``<id>/camid<X>_videoid<Y>/seq<Z>/*.png``). For an animation file the
  file name without extension stands for the last folder (``<id>/<type>/<view>.gif``).
* ``oumvlp``: the raw OU-MVLP tree ``Silhouette_<view>-<seq>/<id>/*.png`` gives ``(id, seq, view)`` directly (no
  separate rearranging step); a tree already rearranged to ``<id>/<seq>/<view>`` is read like ``generic``.

Differences from OpenGait (which uses OpenCV): the resize is bilinear at OpenGait's pixel-centre-aligned sample
positions instead of ``cv2.INTER_CUBIC`` (neither anti-aliases), so edge grey values differ slightly; both axes use
the exact height ratio (OpenGait truncates the resized width to an integer, a < 1 px horizontal squeeze); and the
half-mass column is found at source resolution rather than on the resized grid (sub-pixel centring differences).
The shared implementation is :func:`gaitkd.data.synthetic.crop_and_centre`.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from gaitkd.data.dataset import GaitDataError, load_pkl
from gaitkd.data.synthetic import crop_and_centre
from gaitkd.errors import GaitKDError

DATASETS: tuple[str, ...] = ("casia_b", "oumvlp", "gait3d", "generic")
FRAME_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
ANIMATION_EXTS = frozenset({".gif", ".webp", ".apng", ".tif", ".tiff"})
MIN_FRAME_SUM = 10000  # OpenGait drops frames whose grey-value sum is at most this (near-empty masks)
SHORT_SEQUENCE = 5  # OpenGait warns below this many surviving frames
_CHUNK = 32  # frames resampled at once: bounds the float32 working set for large raw frames
_OUMVLP_RE = re.compile(r"^Silhouette_(\d+)-(\d+)$")


class PrepareError(GaitDataError, GaitKDError):
    """The raw dataset tree or the output folder cannot be used (unknown layout, duplicate sequences, ...)."""


@dataclass(frozen=True)
class RawSequence:
    """One raw sequence: ``key`` = (id, type, view); ``frames`` the sorted frame files, or one animation file."""

    key: tuple[str, str, str]
    frames: tuple[Path, ...]

    @property
    def name(self) -> str:
        return "/".join(self.key)


@dataclass
class SequenceResult:
    """What happened to one sequence (returned by the workers)."""

    name: str
    status: str  # "written" | "skipped" | "empty" | "failed"
    frames: int = 0
    dropped: int = 0
    error: str = ""


@dataclass
class PrepareSummary:
    """Counts of one `prepare` run; the name lists hold the affected sequences as ``id/type/view``."""

    written: int = 0
    skipped: int = 0
    frames: int = 0
    dropped_frames: int = 0
    empty: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, res: SequenceResult) -> None:
        if res.status == "written":
            self.written += 1
            self.frames += res.frames
            if res.frames < SHORT_SEQUENCE:
                self.short.append(res.name)
        elif res.status == "skipped":
            self.skipped += 1
        elif res.status == "empty":
            self.empty.append(res.name)
        else:
            self.failed.append(f"{res.name}: {res.error}")
        self.dropped_frames += res.dropped

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for the CLI table."""
        return [
            ("sequences written", str(self.written)),
            ("skipped (valid pkl exists)", str(self.skipped)),
            ("frames written", str(self.frames)),
            (f"frames dropped (sum <= {MIN_FRAME_SUM})", str(self.dropped_frames)),
            ("empty sequences (no pkl)", str(len(self.empty))),
            (f"short sequences (< {SHORT_SEQUENCE} frames)", str(len(self.short))),
            ("failed sequences", str(len(self.failed))),
        ]


# --------------------------------------------------------------------------------------------------- discovery
def sequence_key(dataset: str, parts: tuple[str, ...], source: Path) -> tuple[str, str, str]:
    """(id, type, view) of a sequence whose path ends with the components ``parts`` (see the module docstring)."""
    if dataset == "oumvlp" and len(parts) >= 2 and (m := _OUMVLP_RE.match(parts[-2])):
        return parts[-1], m.group(2), m.group(1)
    if len(parts) < 3:
        raise PrepareError(f"{source}: cannot read <id>/<type>/<view> from its path for dataset {dataset!r}")
    return parts[-3], parts[-2], parts[-1]


def find_sequences(dataset: str, raw_dir: str | os.PathLike) -> list[RawSequence]:
    """Every sequence under ``raw_dir``, sorted by key: frame folders and animation files (``[N]`` sequences)."""
    if dataset not in DATASETS:
        raise PrepareError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    root = Path(raw_dir).resolve()
    if not root.is_dir():
        raise PrepareError(f"raw folder {raw_dir} does not exist or is not a folder")
    found: dict[tuple[str, str, str], RawSequence] = {}

    def add(parts: tuple[str, ...], frames: tuple[Path, ...], source: Path) -> None:
        key = sequence_key(dataset, parts, source)
        if key in found:
            raise PrepareError(
                f"{frames[0]} and {found[key].frames[0]} are both sequence {'/'.join(key)}; keep one of them"
            )
        found[key] = RawSequence(key, frames)

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        exts = [os.path.splitext(n)[1].lower() for n in filenames]
        frames = tuple(folder / n for n, e in sorted(zip(filenames, exts)) if e in FRAME_EXTS)
        if frames:
            add(folder.parts, frames, folder)
        for name, ext in sorted(zip(filenames, exts)):
            if ext in ANIMATION_EXTS:
                add((*folder.parts, os.path.splitext(name)[0]), (folder / name,), folder / name)
    if not found:
        raise PrepareError(
            f"{raw_dir}: no frame folders ({', '.join(sorted(FRAME_EXTS))}) or animation files "
            f"({', '.join(sorted(ANIMATION_EXTS))}) found"
        )
    return [found[k] for k in sorted(found)]


# ------------------------------------------------------------------------------------------------ frames -> pkl
def read_frames(seq: RawSequence) -> np.ndarray:
    """Decode a sequence to grayscale uint8 ``[T, H, W]`` (frame files in name order, or all animation frames)."""
    images: list[np.ndarray] = []
    for path in seq.frames:
        with Image.open(path) as img:
            if path.suffix.lower() in ANIMATION_EXTS:
                images.extend(np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(img))
            else:
                images.append(np.asarray(img.convert("L")))
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise PrepareError(f"{seq.frames[0].parent}: frames of one sequence differ in size {sorted(shapes)}")
    return np.stack(images) if images else np.zeros((0, 1, 1), np.uint8)


def pretreat(frames: np.ndarray, img_size: int = 64) -> tuple[np.ndarray, int]:
    """OpenGait's per-frame rule on grayscale uint8 ``[T, H, W]`` -> (uint8 ``[T', img_size, img_size]``, dropped).

    Frames with grey-value sum <= ``MIN_FRAME_SUM`` are dropped (``dropped = T - T'``); rows are cropped to the first
    and last non-zero row, so any stray non-zero pixel counts, as in OpenGait.
    """
    keep = frames.reshape(len(frames), -1).sum(1, dtype=np.int64) > MIN_FRAME_SUM
    kept = frames[keep]
    out = np.empty((len(kept), img_size, img_size), np.uint8)
    for start in range(0, len(kept), _CHUNK):
        soft = crop_and_centre(kept[start : start + _CHUNK].astype(np.float32), img_size, img_size, threshold=0.0)
        np.clip(np.rint(soft), 0, 255, out=soft)  # cv2 rounds and saturates its uint8 output the same way
        out[start : start + _CHUNK] = soft
    return out, int(len(frames) - len(kept))


def output_path(out_dir: str | os.PathLike, key: tuple[str, str, str]) -> Path:
    """``<out>/<id>/<type>/<view>/<view>.pkl`` (OpenGait's layout)."""
    return Path(out_dir, *key, f"{key[2]}.pkl")


def is_valid_pkl(path: Path, img_size: int) -> bool:
    """True when ``path`` decodes to a non-empty uint8 ``[T, img_size, W]`` array (a finished earlier run)."""
    if not path.is_file():
        return False
    try:
        return load_pkl(path).shape[1] == img_size
    except GaitDataError:
        return False


def _write_atomic(path: Path, arr: np.ndarray) -> None:
    """Pickle ``arr`` next to ``path`` and rename it into place: an interrupted run never leaves a partial pkl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pkl.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(arr, handle, protocol=4)  # protocol 4: readable by the older Pythons OpenGait runs on
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def process_sequence(seq: RawSequence, out_dir: str | os.PathLike, img_size: int = 64) -> SequenceResult:
    """Pretreat one sequence and write its pkl, unless a valid pkl is already there."""
    path = output_path(out_dir, seq.key)
    if is_valid_pkl(path, img_size):
        return SequenceResult(seq.name, "skipped")
    try:
        sils, dropped = pretreat(read_frames(seq), img_size)
    except (OSError, ValueError) as err:  # unreadable / inconsistent input: report it, keep going with the rest
        return SequenceResult(seq.name, "failed", error=f"{type(err).__name__}: {err}")
    if len(sils) == 0:
        return SequenceResult(seq.name, "empty", dropped=dropped)
    _write_atomic(path, sils)
    return SequenceResult(seq.name, "written", frames=len(sils), dropped=dropped)


def _process_task(task: tuple[RawSequence, str, int]) -> SequenceResult:
    return process_sequence(*task)


def prepare(
    dataset: str,
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int = 1,
    img_size: int = 64,
    progress: bool = True,
) -> PrepareSummary:
    """Convert every sequence of ``raw_dir`` into ``out_dir`` with ``workers`` processes; returns the counts.

    Resumable: sequences whose pkl exists and decodes are skipped (sequences that came out empty are re-read).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if img_size < 2 or img_size % 2:
        raise PrepareError(f"img_size must be an even number of pixels >= 2, got {img_size}")
    seqs = find_sequences(dataset, raw_dir)
    tasks = [(s, str(out_dir), img_size) for s in seqs]
    summary = PrepareSummary()
    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = (pool.map(_process_task, tasks, chunksize=max(1, len(tasks) // (workers * 8))) if pool
                   else map(_process_task, tasks))
        with Progress(*columns, disable=not progress) as bar:
            job = bar.add_task("prepare", total=len(tasks))
            for res in results:
                summary.add(res)
                bar.advance(job)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return summary
