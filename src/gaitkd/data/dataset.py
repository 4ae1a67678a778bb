"""OpenGait-layout sequence index and pkl decoding.

Owns: discovering ``root/<id>/<type>/<view>/*.pkl`` sequences (sorted by (id, type, view), as OpenGait's
dataset lists are), decoding and validating one pkl into a uint8 ``[T, H, W]`` array, the 64x64 -> 64x44 width
cut (OpenGait's ``BaseSilCuttingTransform``, chosen per array from its shape so 64x44 pkls are never cut twice)
and the optional in-RAM cache. Frame sampling and float conversion live in :mod:`gaitkd.data.sampling`.

The pkls are Python pickles (OpenGait's format); unpickling executes code from the file, so only load folders you
trust.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LAYOUT = "<root>/<id>/<type>/<view>/*.pkl (each pkl a pickled numpy uint8 array [T, H, W])"
# A pkl smaller than this cannot hold more than a frame or two of 64x44 silhouettes; decoding such files at
# setup catches empty sequences without reading the whole corpus.
SMALL_PKL_BYTES = 16 * 1024


class GaitDataError(ValueError):
    """The data on disk (folder layout, pkl content, partition file) is not what gaitkd expects."""


class GaitDataWarning(UserWarning):
    """Something in the data was skipped (missing ids, empty folders) and the user should know."""


def require_root(root: str | os.PathLike | None) -> Path:
    """The dataset root as a ``Path``; a missing folder is one error naming it and the expected layout."""
    if root is None or not Path(root).is_dir():
        raise GaitDataError(
            f"dataset root {root} does not exist or is not a folder. Expected {LAYOUT}. "
            "Point data.root at an OpenGait pkl folder, or use data=synthetic for the embedded synthetic dataset."
        )
    return Path(root)


def cut_width(seq: np.ndarray) -> np.ndarray:
    """Crop ``W // 64 * 10`` columns on each side of square silhouettes (64x64 -> 64x44, 128x128 -> 128x88).

    ``seq`` is ``[T, H, W]``; non-square arrays (already cut, e.g. Gait3D's 64x44 pkls) are returned unchanged.
    Returns a view, no copy.
    """
    height, width = seq.shape[1:]
    if height != width:
        return seq
    cut = width // 64 * 10
    return seq[:, :, cut : width - cut] if cut else seq


def load_pkl(path: str | os.PathLike) -> np.ndarray:
    """Decode one OpenGait pkl into a validated uint8 ``[T, H, W]`` array (width-cut when square)."""
    try:
        with open(path, "rb") as handle:
            obj = pickle.load(handle)
    except Exception as err:  # any unpickling failure is a data problem of this file
        raise GaitDataError(f"{path}: cannot unpickle ({type(err).__name__}: {err}); expected {LAYOUT}") from err
    if not isinstance(obj, np.ndarray):
        raise GaitDataError(f"{path}: expected a numpy uint8 array [T, H, W], found {type(obj).__name__}")
    if obj.dtype != np.uint8 or obj.ndim != 3:
        raise GaitDataError(
            f"{path}: expected a numpy uint8 array [T, H, W], found dtype {obj.dtype} with shape {list(obj.shape)}"
        )
    if obj.shape[0] == 0:
        raise GaitDataError(f"{path}: empty sequence (0 frames); remove it or re-run the pretreatment")
    return cut_width(obj)


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def _pkls(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_file() and e.name.endswith(".pkl"))


class GaitSequenceDataset:
    """Index of the sequences of an OpenGait pkl folder; item ``i`` is the uint8 array ``[T, H, W]``.

    Args:
        root: dataset folder laid out as ``root/<id>/<type>/<view>/*.pkl``.
        ids: identities to keep (``None``: every identity on disk). Ids absent on disk are reported in a
            :class:`GaitDataWarning`; an error is raised if none remain.
        modalities: which pkls of a sequence folder to use, as indices into its sorted pkl list or file names
            (OpenGait's ``data_in_use``); ``None`` uses every pkl. ``__getitem__`` returns the first selected one.
        cache: keep decoded arrays in RAM after the first load (see :meth:`preload`).

    Attributes:
        labels, types, views: ``list[str]`` per sequence, sorted by (id, type, view).
        paths: ``list[list[str]]``, the selected pkl paths of each sequence.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ids: Sequence[str] | None = None,
        modalities: Sequence[int | str] | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.modalities = None if modalities is None else list(modalities)
        self.cache = cache
        self.labels: list[str] = []
        self.types: list[str] = []
        self.views: list[str] = []
        self.paths: list[list[str]] = []
        self._scan(ids)
        self._cached: list[np.ndarray | None] = [None] * len(self.paths)

    def _scan(self, ids: Sequence[str] | None) -> None:
        require_root(self.root)
        on_disk = _subdirs(str(self.root))
        wanted = on_disk if ids is None else sorted(set(ids))
        present = set(on_disk)
        missing: list[str] = []
        empty_views = 0
        for label in wanted:
            if label not in present:
                missing.append(label)
                continue
            found = False
            id_dir = os.path.join(self.root, label)
            for typ in _subdirs(id_dir):
                for view in _subdirs(os.path.join(id_dir, typ)):
                    seq_dir = os.path.join(id_dir, typ, view)
                    names = _pkls(seq_dir)
                    if not names:
                        empty_views += 1
                        continue
                    self.labels.append(label)
                    self.types.append(typ)
                    self.views.append(view)
                    self.paths.append([os.path.join(seq_dir, n) for n in self._select(names, seq_dir)])
                    found = True
            if not found and ids is not None:
                missing.append(label)
        if empty_views:
            warnings.warn(
                f"{self.root}: skipped {empty_views} sequence folders without .pkl files", GaitDataWarning, stacklevel=3
            )
        if missing and ids is not None:
            warnings.warn(
                f"{self.root}: {len(missing)} of {len(wanted)} requested ids have no sequences on disk "
                f"(first: {missing[:5]}); they are left out",
                GaitDataWarning,
                stacklevel=3,
            )
        if not self.paths:
            what = "none of the requested ids has" if ids is not None else "no"
            raise GaitDataError(
                f"{self.root}: {what} sequences found. Expected {LAYOUT}. "
                "Check data.root / data.partition, or use data=synthetic for the embedded synthetic dataset."
            )

    def _select(self, names: list[str], seq_dir: str) -> list[str]:
        if self.modalities is None:
            return names
        chosen = []
        for m in self.modalities:
            if isinstance(m, int) and -len(names) <= m < len(names):
                chosen.append(names[m])
            elif isinstance(m, str) and (m in names or f"{m}.pkl" in names):
                chosen.append(m if m in names else f"{m}.pkl")
            else:
                raise GaitDataError(f"{seq_dir}: modality {m!r} not found among its pkls {names}")
        return chosen

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """uint8 ``[T, H, W]`` of the first selected modality of sequence ``index``."""
        cached = self._cached[index]
        if cached is not None:
            return cached
        seq = load_pkl(self.paths[index][0])
        if self.cache:
            self._cached[index] = seq
        return seq

    def preload(self) -> None:
        """Decode (and validate) every sequence now and keep it in RAM; forked workers then share it."""
        self.cache = True
        for i in range(len(self)):
            self[i]

    def validate(self) -> None:
        """Cheap early check: decode the first sequence and every pkl too small to hold more than a frame or two.

        Catches wrong formats and empty sequences at setup without reading the whole corpus; every later load
        validates its own file anyway.
        """
        load_pkl(self.paths[0][0])
        for seq_paths in self.paths:
            for path in seq_paths:
                if os.path.getsize(path) < SMALL_PKL_BYTES:
                    load_pkl(path)
