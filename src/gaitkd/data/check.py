"""`gaitkd check-data`: every problem of an OpenGait-layout dataset (and its partition file) in one report.

Owns: walking ``root/<id>/<type>/<view>/*.pkl`` without stopping at the first problem, decoding every selected pkl
once (threads, rich progress bar on large trees), cross-sequence checks (majority frame size per selected
modality, modality counts, frame counts within a sequence), partition diagnostics, and the :class:`Report` (rich
table / plain text, ``.errors`` / ``.ok`` / ``.bad_sequences``). :func:`assert_clean` turns a report with errors
into one :class:`GaitDataError`; the datamodule runs the same check at setup (``data.on_error``).

The per-pkl verdict is :func:`gaitkd.data.dataset.array_problem`, the rule ``load_pkl`` raises on (a pkl with no
issue here loads there: the first selected pkl of a sequence as silhouettes, the others as extra modalities); the
check keeps the raw frame size (before the width cut) and records the failure instead of raising. Unpickling
executes code from the files: check only folders you trust.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress
from rich.table import Table

from gaitkd.data.dataset import LAYOUT, GaitDataError, array_problem, parse_modalities, read_pkl, select_modalities
from gaitkd.data.partition import Partition, load_partition

ERROR, WARNING = "error", "warning"
# kind -> (severity, what it means). Errors break loading or change results; warnings are data the loader skips.
KINDS: dict[str, tuple[str, str]] = {
    "root_missing": (ERROR, "dataset root does not exist or is not a folder"),
    "no_sequences": (ERROR, f"no sequence folder with .pkl files found; expected {LAYOUT}"),
    "unreadable_folder": (ERROR, "folder cannot be listed (permissions, I/O error)"),
    "unreadable_pkl": (ERROR, "pkl cannot be unpickled (corrupt, truncated, not a pickle)"),
    "not_array": (ERROR, "pkl does not hold a numpy array"),
    "wrong_dtype": (ERROR, "array dtype is not uint8 (silhouettes) / not numeric (extra modalities)"),
    "wrong_rank": (ERROR, "array is not [T, H, W] (silhouettes) / has no frame axis (extra modalities)"),
    "empty_sequence": (ERROR, "empty sequence (array has 0 frames)"),
    "shape_outlier": (ERROR, "frame size H x W differs from the dataset's majority"),
    "frame_count_mismatch": (ERROR, "pkls of one sequence folder have different frame counts"),
    "modality_missing": (ERROR, "requested modality (data.modalities) not among the sequence's pkls"),
    "misplaced_pkl": (ERROR, "pkl at the wrong depth (ignored by the loader)"),
    "partition_unreadable": (ERROR, "partition file missing, not JSON, or a set is not a list of id strings"),
    "partition_missing_key": (ERROR, "partition lacks TRAIN_SET or TEST_SET"),
    "id_in_both_sets": (ERROR, "id listed in both TRAIN_SET and TEST_SET"),
    "modality_count_mismatch": (WARNING, "sequence has a different number of pkls than most sequences"),
    "empty_folder": (WARNING, "id / type / view folder is empty"),
    "sequence_without_pkl": (WARNING, "view folder has files but no .pkl"),
    "stray_file": (WARNING, "non-.pkl file inside a sequence folder"),
    "not_a_folder": (WARNING, "file where an <id>/<type>/<view> folder is expected"),
    "unexpected_folder": (WARNING, "folder inside a sequence (view) folder"),
    "partition_id_missing": (WARNING, "partition id has no folder on disk"),
    "unlisted_id": (WARNING, "id folder on disk in neither TRAIN_SET nor TEST_SET"),
    "probe_missing": (WARNING, "PROBE_SET entry <id>-<type>-<view> not found on disk"),
}
# Errors confined to one sequence folder: data.on_error=skip can leave that sequence out and go on.
SEQUENCE_KINDS = frozenset({"unreadable_pkl", "not_array", "wrong_dtype", "wrong_rank", "empty_sequence",
                            "shape_outlier", "frame_count_mismatch", "modality_missing"})
MAX_EXAMPLES = 5
PROGRESS_MIN_PKLS = 500  # below this the check takes well under a second; no bar


@dataclass
class Issue:
    """All occurrences of one kind: ``count`` and the first ``MAX_EXAMPLES`` ``(where, detail)`` pairs."""

    kind: str
    count: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]


@dataclass
class Report:
    """Result of :func:`check_dataset`. Locations are relative to ``root`` (partition issues name ids).

    ``bad_sequences``: every ``"<id>/<type>/<view>"`` with a :data:`SEQUENCE_KINDS` error -> its kinds (complete,
    unlike the capped examples). ``frames``: ``"<id>/<type>/<view>"`` -> frame count of its valid silhouette
    pkl. ``arrays``: with ``keep=True``, the raw decoded selected pkls of each sequence,
    by path, so a caching loader need not decode them again. ``majority_shape``: of the first selected pkls.
    """

    root: Path
    partition: Path | str | None = None  # the JSON checked, or a description of a given split
    sequences: int = 0
    pkls: int = 0
    majority_shape: tuple[int, int] | None = None
    issues: dict[str, Issue] = field(default_factory=dict)
    bad_sequences: dict[str, list[str]] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict, repr=False)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def add(self, kind: str, where: str, detail: str = "", sequence: str | None = None) -> None:
        """Record one occurrence; ``sequence`` (``"<id>/<type>/<view>"``) marks that sequence as bad."""
        if kind not in KINDS:  # a typo in this module, not a data problem
            raise KeyError(f"unknown issue kind {kind!r}")
        if sequence is not None:
            self.bad_sequences.setdefault(sequence, []).append(kind)
        issue = self.issues.setdefault(kind, Issue(kind))
        issue.count += 1
        if len(issue.examples) < MAX_EXAMPLES:
            issue.examples.append((where, detail))

    @property
    def counts(self) -> dict[str, int]:
        return {kind: issue.count for kind, issue in self.issues.items()}

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues.values() if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues.values() if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def _sorted(self) -> list[Issue]:
        # errors first, then in KINDS order (roughly: root, files, sequences, partition)
        order = list(KINDS)
        return sorted(self.issues.values(), key=lambda i: (i.severity != ERROR, order.index(i.kind)))

    def raise_if_errors(self, hint: str) -> None:
        """:class:`GaitDataError` with ``hint`` and the whole report text when there is any error."""
        if not self.ok:
            raise GaitDataError(f"dataset check failed ({hint})\n{self}")

    def summary(self) -> str:
        shape = "" if self.majority_shape is None else f", frames {self.majority_shape[0]}x{self.majority_shape[1]}"
        part = f", partition {self.partition}" if self.partition else ", no partition checked"
        verdict = "OK" if self.ok else f"{sum(i.count for i in self.errors)} errors"
        warns = sum(i.count for i in self.warnings)
        return f"{self.root}: {self.sequences} sequences, {self.pkls} pkls{shape}{part} -> {verdict}, {warns} warnings"

    @staticmethod
    def _example(where: str, detail: str) -> str:
        return f"{where} ({detail})" if detail else where

    def __str__(self) -> str:
        lines = [self.summary()]
        for issue in self._sorted():
            shown = "; ".join(self._example(*e) for e in issue.examples[:3])
            lines.append(f"  {issue.severity} {issue.kind} x{issue.count}: {KINDS[issue.kind][1]}. e.g. {shown}")
        return "\n".join(lines)

    def __rich__(self) -> Table:
        table = Table(title=self.summary(), title_justify="left")
        for col in ("kind", "severity", "count", "meaning", "first examples"):
            table.add_column(col, justify="right" if col == "count" else "left", overflow="fold")
        for issue in self._sorted():
            colour = "red" if issue.severity == ERROR else "yellow"
            table.add_row(issue.kind, f"[{colour}]{issue.severity}[/{colour}]", str(issue.count), KINDS[issue.kind][1],
                          "\n".join(self._example(*e) for e in issue.examples[:3]))
        return table


Verdict = tuple[str | None, str, tuple[int, ...] | None, np.ndarray | None]


def inspect_pkl(path: str, keep: bool = False, silhouette: bool = True) -> Verdict:
    """Decode one pkl: ``(issue kind or None, detail, raw shape [T, ...] or None, raw array if keep and valid)``.

    Same rules as ``load_pkl`` (``silhouette``: the first selected modality of a sequence).
    """
    try:
        obj = read_pkl(path)
    except GaitDataError as err:  # any unpickling failure (truncation, garbage, missing class) is this file's problem
        cause = err.__cause__
        return "unreadable_pkl", f"{type(cause).__name__}: {cause}"[:120], None, None
    problem = array_problem(obj, silhouette)
    if problem is not None:
        return *problem, None, None
    return None, "", tuple(obj.shape), obj if keep else None


def _entries(path: Path, report: Report, rel: str) -> tuple[list[str], list[str]] | None:
    """Sorted ``(sub-folder names, other entry names)`` of ``path``; ``None`` (and an issue) if unlistable."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError as err:
        report.add("unreadable_folder", rel, type(err).__name__)
        return None
    dirs = sorted(e.name for e in entries if e.is_dir())
    files = sorted(e.name for e in entries if not e.is_dir())  # broken links count as files
    return dirs, files


def _folder_level(path: Path, report: Report, rel: str, skip_json: bool = False) -> list[str] | None:
    """Check an <id>/<type> level folder (or the root): files here are misplaced; returns its sub-folders."""
    listed = _entries(path, report, rel)
    if listed is None:
        return None
    dirs, files = listed
    for name in files:
        where = f"{rel}/{name}" if rel else name
        if name.endswith(".pkl"):
            report.add("misplaced_pkl", where)
        elif not (skip_json and name.endswith(".json")):  # partition files may sit in the root
            report.add("not_a_folder", where)
    if rel and not dirs and not files:
        report.add("empty_folder", rel)
    return dirs


def _scan(
    root: Path, report: Report, modalities: list | None, only: Collection[str] | None
) -> tuple[list[str], dict[str, list[str]]]:
    """Walk the tree (ids in ``only``, or all); returns on-disk ids and ``{"<id>/<type>/<view>": [pkl paths]}``."""
    ids = _folder_level(root, report, "", skip_json=True) or []
    sequences: dict[str, list[str]] = {}
    pkl_counts: dict[str, int] = {}
    for sid in ids if only is None else [i for i in ids if i in only]:
        for typ in _folder_level(root / sid, report, sid) or []:
            for view in _folder_level(root / sid / typ, report, f"{sid}/{typ}") or []:
                rel = f"{sid}/{typ}/{view}"
                listed = _entries(root / rel, report, rel)
                if listed is None:
                    continue
                dirs, files = listed
                names = [n for n in files if n.endswith(".pkl")]
                for name in dirs:
                    report.add("unexpected_folder", f"{rel}/{name}")
                for name in files:
                    if not name.endswith(".pkl"):
                        report.add("stray_file", f"{rel}/{name}")
                if not names:
                    report.add("empty_folder" if not dirs and not files else "sequence_without_pkl", rel)
                    continue
                pkl_counts[rel] = len(names)
                try:
                    chosen = select_modalities(names, modalities, rel)
                except GaitDataError as err:
                    report.add("modality_missing", rel, str(err).removeprefix(f"{rel}: "), sequence=rel)
                    continue
                # os.path.join as GaitSequenceDataset builds its paths (same strings, far cheaper than pathlib)
                sequences[rel] = [os.path.join(root, rel, n) for n in chosen]
    if pkl_counts:
        usual = Counter(pkl_counts.values()).most_common(1)[0][0]
        for rel, n in pkl_counts.items():
            if n != usual:
                report.add("modality_count_mismatch", rel, f"{n} pkls, most have {usual}")
    return ids, sequences


def _decode_all(paths: list[str], keep: bool, first: list[bool], workers: int, progress: bool) -> list[Verdict]:
    """``inspect_pkl`` over ``paths`` in order (``first``: silhouette rules); threads overlap file I/O, the bar
    shows on large trees only."""
    threaded = workers > 1 and len(paths) >= 64
    args = (paths, [keep] * len(paths), first)
    with ThreadPoolExecutor(workers) if threaded else nullcontext() as pool:
        results = pool.map(inspect_pkl, *args, chunksize=16) if threaded else map(inspect_pkl, *args)
        if progress and len(paths) >= PROGRESS_MIN_PKLS:
            return _tracked(results, len(paths))
        return list(results)


def _tracked(results: Iterable, total: int) -> list:
    out = []
    with Progress(transient=True) as bar:
        task = bar.add_task("decoding pkls", total=total)
        for res in results:
            out.append(res)
            bar.advance(task)
    return out


def _check_sequences(root: Path, sequences: dict[str, list[str]], report: Report, workers: int,
                     progress: bool, keep: bool) -> None:
    flat = [p for paths in sequences.values() for p in paths]
    first = [i == 0 for paths in sequences.values() for i in range(len(paths))]  # the silhouette input
    verdicts = iter(_decode_all(flat, keep, first, workers, progress))
    report.pkls = len(flat)
    # relative pkl path -> (sequence, position in the selection, raw shape [T, ...]), valid pkls only
    shapes: dict[str, tuple[str, int, tuple[int, ...]]] = {}
    for rel, paths in sequences.items():
        frames: dict[str, int] = {}
        for position, path in enumerate(paths):
            kind, detail, shape, array = next(verdicts)
            name = os.path.basename(path)
            where = f"{rel}/{name}"
            if kind is not None:
                report.add(kind, where, detail, sequence=rel)
                continue
            shapes[where] = rel, position, shape
            frames[name] = shape[0]
            if position == 0:
                report.frames[rel] = shape[0]
            if array is not None:
                report.arrays[path] = array
        if len(set(frames.values())) > 1:
            report.add("frame_count_mismatch", rel, ", ".join(f"{n}: T={t}" for n, t in frames.items()), sequence=rel)
    majority = {}  # per position in the selection: the most common frame size
    for position in sorted({pos for _, pos, _ in shapes.values()}):
        size = Counter(s[1:] for _, pos, s in shapes.values() if pos == position)
        majority[position] = size.most_common(1)[0][0]
    report.majority_shape = majority.get(0)
    for where, (rel, position, shape) in shapes.items():
        if shape[1:] != majority[position]:
            found, most = ("x".join(map(str, s)) for s in (shape[1:], majority[position]))
            report.add("shape_outlier", where, f"{found}, most are {most}", sequence=rel)


def _diagnose_partition(path: Path, report: Report) -> Partition | None:
    """``load_partition``, or (when it refuses the file) every reason why, plus the usable part of the file."""
    try:
        return load_partition(path)
    except GaitDataError as err:
        reason = str(err)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        report.add("partition_unreadable", str(path), reason)
        return None
    sets: dict[str, list[str]] = {}
    for key in ("TRAIN_SET", "TEST_SET", "PROBE_SET"):
        value = data.get(key)
        if key not in data:
            if key != "PROBE_SET":
                report.add("partition_missing_key", str(path), key)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            sets[key] = value
        else:
            report.add("partition_unreadable", str(path), f"{key} is not a list of id strings")
    for sid in sorted(set(sets.get("TRAIN_SET", [])) & set(sets.get("TEST_SET", []))):
        report.add("id_in_both_sets", sid)
    return Partition(sets.get("TRAIN_SET", []), sets.get("TEST_SET", []), sets.get("PROBE_SET"))


def _check_partition(part: Partition, ids: list[str], sequences: dict[str, list[str]], report: Report) -> None:
    on_disk = set(ids)
    for name, listed in (("TRAIN_SET", part.train), ("TEST_SET", part.test)):
        for sid in sorted(set(listed) - on_disk):
            report.add("partition_id_missing", sid, name)
    for sid in sorted(on_disk - set(part.train) - set(part.test)):
        report.add("unlisted_id", sid)
    if part.probe is not None:
        seen = {rel.replace("/", "-") for rel in sequences}
        for entry in part.probe:
            if entry not in seen:
                report.add("probe_missing", entry)


def check_dataset(
    root: str | os.PathLike,
    partition: str | os.PathLike | Partition | None = None,
    modalities: Sequence[int | str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    ids: Collection[str] | None = None,
    keep: bool = False,
) -> Report:
    """Check an OpenGait pkl folder and its partition; collects every problem instead of raising.

    Args:
        root: ``root/<id>/<type>/<view>/*.pkl``.
        partition: OpenGait partition JSON, or an already loaded :class:`Partition` (e.g. from a split rule);
            ``None`` uses ``root/partition.json`` when it exists (as the datamodule does), otherwise skips the
            partition checks.
        modalities: pkls of each sequence to decode (names, indices into the sorted pkl list or a bool mask, see
            :func:`gaitkd.data.dataset.parse_modalities`); ``None`` decodes all. The first selected pkl is checked
            as silhouettes (uint8 ``[T, H, W]``), the others as extra modalities (numeric ``[T, ...]``).
        workers: decoding threads (default ``min(4, cpu count)``).
        progress: show a rich progress bar when there are many pkls.
        ids: decode only these ids' sequences (the ones in use); partition checks still see every id on disk.
        keep: keep the raw arrays of each sequence's selected pkls in ``report.arrays`` (for a caching loader).
    """
    root = Path(root)
    report = Report(root=root)
    if not root.is_dir():
        report.add("root_missing", str(root), f"expected {LAYOUT}")
        return report
    on_disk, sequences = _scan(root, report, parse_modalities(modalities, "modalities"),
                               None if ids is None else set(ids))
    report.sequences = len(sequences)
    if not sequences:
        report.add("no_sequences", str(root))
    _check_sequences(root, sequences, report, workers or min(4, os.cpu_count() or 1), progress, keep)
    if partition is None and (root / "partition.json").is_file():
        partition = root / "partition.json"
    if isinstance(partition, Partition):
        report.partition = f"split of {len(partition.train)} train / {len(partition.test)} test ids"
        _check_partition(partition, on_disk, sequences, report)
    elif partition is not None:
        report.partition = Path(partition)
        part = _diagnose_partition(Path(partition), report)
        if part is not None:
            _check_partition(part, on_disk, sequences, report)
    return report


def assert_clean(
    root: str | os.PathLike, partition: str | os.PathLike | None = None, modalities: Sequence[int | str] | None = None
) -> Report:
    """Fail fast: :class:`GaitDataError` carrying the report text if the dataset has errors; else the report."""
    report = check_dataset(root, partition, modalities, progress=False)
    report.raise_if_errors(f"run `gaitkd check-data {root}` for the table")
    return report
