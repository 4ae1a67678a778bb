"""OpenGait-layout sequence index and pkl decoding.

Owns: discovering ``root/<id>/<type>/<view>/*.pkl`` sequences (sorted by (id, type, view), as OpenGait's
dataset lists are), the modality selection (OpenGait's ``data_in_use``), decoding and validating one pkl into a
uint8 ``[T, H, W]`` silhouette array (or an extra modality ``[T, ...]``), the 64x64 -> 64x44 width
cut (OpenGait's ``BaseSilCuttingTransform``, chosen per array from its shape so 64x44 pkls are never cut twice)
and the optional in-RAM cache. Frame sampling and float conversion live in :mod:`gaitkd.data.sampling`.

The pkls are Python pickles (OpenGait's format); unpickling executes code from the file, so only load folders you
trust.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Collection, Sequence
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

    ``seq`` is ``[T, H, W]``; non-square arrays (already cut, e.g. Gait3D's 64x44 pkls) and arrays of another rank
    (e.g. pose ``[T, K, 3]`` extras) are returned unchanged. Returns a view, no copy.
    """
    if seq.ndim != 3 or seq.shape[1] != seq.shape[2]:
        return seq
    width = seq.shape[2]
    cut = width // 64 * 10
    return seq[:, :, cut : width - cut] if cut else seq


SILHOUETTE = "a numpy uint8 array [T, H, W]"
EXTRA = "a numeric numpy array [T, ...]"


def array_problem(obj: object, silhouette: bool = True) -> tuple[str, str] | None:
    """Why ``obj`` cannot be a sequence: ``(kind, detail)`` with a :data:`gaitkd.data.check.KINDS` kind, or ``None``.

    Silhouettes (the first selected modality) must be uint8 ``[T, H, W]``; extra modalities any numeric array with
    a leading frame axis ``[T, ...]``. Both need at least one frame.
    """
    if not isinstance(obj, np.ndarray):
        return "not_array", type(obj).__name__
    dtype_ok = obj.dtype == np.uint8 if silhouette else obj.dtype.kind in "biuf"  # bool, int, uint, float
    if not dtype_ok:
        return "wrong_dtype", str(obj.dtype)
    if (obj.ndim != 3) if silhouette else (obj.ndim < 1):
        return "wrong_rank", f"shape {list(obj.shape)}"
    if obj.shape[0] == 0:
        return "empty_sequence", "0 frames"
    return None


def read_pkl(path: str | os.PathLike) -> object:
    """Unpickle one file; any failure is one :class:`GaitDataError` naming it (the cause is chained)."""
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except Exception as err:  # any unpickling failure is a data problem of this file
        raise GaitDataError(f"{path}: cannot unpickle ({type(err).__name__}: {err}); expected {LAYOUT}") from err


def load_pkl(path: str | os.PathLike, silhouette: bool = True) -> np.ndarray:
    """Decode one OpenGait pkl into a validated array (see :func:`array_problem`), width-cut when square ``[T, H, H]``.

    ``silhouette``: uint8 ``[T, H, W]`` (the model input); otherwise an extra modality ``[T, ...]``, dtype kept.
    """
    obj = read_pkl(path)
    problem = array_problem(obj, silhouette)
    if problem is not None:
        expected = SILHOUETTE if silhouette else EXTRA
        if problem[0] == "empty_sequence":
            raise GaitDataError(f"{path}: empty sequence (0 frames); remove it or re-run the pretreatment")
        found = problem[1] if problem[0] == "not_array" else f"dtype {obj.dtype} with shape {list(obj.shape)}"
        raise GaitDataError(f"{path}: expected {expected}, found {found}")
    return cut_width(obj)


Selection = list[int] | list[str] | list[bool]


def parse_modalities(value: object, key: str = "data.modalities") -> list | None:
    """Validate a modality selector (OpenGait's ``data_in_use``) -> ``None`` (every pkl) or a non-empty list.

    Accepted: ``None``; pkl names (``"sils.pkl"`` or ``"sils"``) and / or indices into the sorted pkl list of each
    sequence folder (one name / index alone is a one-item list); or a bool mask over that sorted list. Anything
    else is one :class:`GaitDataError` naming ``key``.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
    if isinstance(items, Sequence) and not isinstance(items, str):
        items = list(items)
        bools = [isinstance(m, bool) for m in items]
        if items and all(bools) and any(items):
            return items
        if items and not any(bools) and all(isinstance(m, (int, str)) for m in items) and len(set(items)) == len(items):
            return items
    raise GaitDataError(
        f"{key}={value!r}: expected null (every pkl of a sequence folder), a list of pkl names (e.g. [sils.pkl]) "
        "and / or indices into the sorted pkl list without repeats, or a bool mask over that list with at least one "
        "true (OpenGait's data_in_use); the first selected pkl is the silhouette input"
    )


def select_modalities(names: list[str], selection: Selection | None, where: str) -> list[str]:
    """The pkl names of one sequence folder (``names``, sorted) picked by a :func:`parse_modalities` selector."""
    if selection is None:
        return names
    if isinstance(selection[0], bool):
        if len(selection) != len(names):
            raise GaitDataError(f"{where}: modality mask {selection} has {len(selection)} entries for pkls {names}")
        return [n for n, keep in zip(names, selection) if keep]
    chosen = []
    for m in selection:
        if isinstance(m, int) and -len(names) <= m < len(names):
            chosen.append(names[m])
        elif isinstance(m, str) and (m in names or f"{m}.pkl" in names):
            chosen.append(m if m in names else f"{m}.pkl")
        else:
            raise GaitDataError(f"{where}: modality {m!r} not found among its pkls {names}")
    if len(set(chosen)) < len(chosen):
        raise GaitDataError(f"{where}: modalities {selection} pick the same pkl twice ({chosen})")
    return chosen


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def _pkls(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_file() and e.name.endswith(".pkl"))


class GaitSequenceDataset:
    """Index of the sequences of an OpenGait pkl folder; item ``i`` is the silhouette array uint8 ``[T, H, W]``.

    Args:
        root: dataset folder laid out as ``root/<id>/<type>/<view>/*.pkl``.
        ids: identities to keep (``None``: every identity on disk). Ids absent on disk are reported in a
            :class:`GaitDataWarning`; an error is raised if none remain.
        modalities: which pkls of a sequence folder to use (OpenGait's ``data_in_use``, see
            :func:`parse_modalities`): names, indices into its sorted pkl list, or a bool mask; ``None`` uses every
            pkl. The first selected pkl is the silhouette input (``__getitem__``); :meth:`load` returns them all.
        cache: keep decoded arrays in RAM after the first load (see :meth:`preload`).
        exclude: ``"<id>/<type>/<view>"`` keys left out (sequences the data check found broken); counted in
            ``excluded``.

    Attributes:
        labels, types, views: ``list[str]`` per sequence, sorted by (id, type, view).
        paths: ``list[list[str]]``, the selected pkl paths of each sequence, in selection order.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ids: Sequence[str] | None = None,
        modalities: Selection | str | int | None = None,
        cache: bool = False,
        exclude: Collection[str] = (),
    ) -> None:
        self.root = Path(root)
        self.modalities = parse_modalities(modalities, "modalities")
        self.cache = cache
        self.labels: list[str] = []
        self.types: list[str] = []
        self.views: list[str] = []
        self.paths: list[list[str]] = []
        self.excluded = 0
        self._scan(ids, exclude)
        self._cached: list[tuple[np.ndarray, ...] | None] = [None] * len(self.paths)

    def _scan(self, ids: Sequence[str] | None, exclude: Collection[str]) -> None:
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
                    if f"{label}/{typ}/{view}" in exclude:
                        self.excluded += 1
                        found = True
                        continue
                    seq_dir = os.path.join(id_dir, typ, view)
                    names = _pkls(seq_dir)
                    if not names:
                        empty_views += 1
                        continue
                    self.labels.append(label)
                    self.types.append(typ)
                    self.views.append(view)
                    self.paths.append([os.path.join(seq_dir, n) for n in select_modalities(names, self.modalities,
                                                                                           seq_dir)])
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
        if not self.paths and not self.excluded:  # all excluded: the caller reports why
            what = "none of the requested ids has" if ids is not None else "no"
            raise GaitDataError(
                f"{self.root}: {what} sequences found. Expected {LAYOUT}. "
                "Check data.root / data.partition, or use data=synthetic for the embedded synthetic dataset."
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """uint8 ``[T, H, W]`` of the first selected modality (the silhouettes) of sequence ``index``."""
        return self.load(index)[0]

    def load(self, index: int) -> tuple[np.ndarray, ...]:
        """Every selected modality of sequence ``index``, in selection order, all with the same frame count ``T``.

        The first is the silhouette array uint8 ``[T, H, W]``, the others extra arrays ``[T, ...]`` (dtype kept);
        square ``[T, H, H]`` arrays are width-cut.
        """
        cached = self._cached[index]
        if cached is not None:
            return cached
        paths = self.paths[index]
        arrays = tuple(load_pkl(path, silhouette=i == 0) for i, path in enumerate(paths))
        check_frame_counts(paths, [len(a) for a in arrays])
        if self.cache:
            self._cached[index] = arrays
        return arrays

    def seed_cache(self, raw: dict[str, np.ndarray]) -> None:
        """Fill the cache from already decoded (uncut) arrays by path, e.g. the data check's ``report.arrays``.

        A sequence is cached only when all its selected pkls are in ``raw``.
        """
        for i, paths in enumerate(self.paths):
            if self._cached[i] is None and all(p in raw for p in paths):
                self._cached[i] = tuple(cut_width(raw[p]) for p in paths)

    def preload(self) -> None:
        """Decode (and validate) every sequence now and keep it in RAM; forked workers then share it."""
        self.cache = True
        for i in range(len(self)):
            self.load(i)

    def validate(self) -> None:
        """Cheap early check: decode the first sequence and every pkl too small to hold more than a frame or two.

        Catches wrong formats and empty sequences at setup without reading the whole corpus; every later load
        validates its own file anyway.
        """
        self.load(0)
        for seq_paths in self.paths:
            for i, path in enumerate(seq_paths):
                if os.path.getsize(path) < SMALL_PKL_BYTES:
                    load_pkl(path, silhouette=i == 0)


def check_frame_counts(paths: Sequence[str], counts: Sequence[int]) -> None:
    """One :class:`GaitDataError` naming the sequence folder when its selected modalities differ in frame count."""
    if len(set(counts)) > 1:
        found = ", ".join(f"{os.path.basename(p)}: T={t}" for p, t in zip(paths, counts))
        raise GaitDataError(
            f"{os.path.dirname(paths[0])}: the selected modalities have different frame counts ({found}); they are "
            "sampled with the same frame indices, so they must be equally long (select others with data.modalities)"
        )
