"""Tests of gaitkd.data.check / `gaitkd check-data`: a corpus with planted defects of many kinds next to clean
sequences; every planted defect is found with its exact count and location, and nothing else is reported."""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from gaitkd.cli import main
from gaitkd.data import GaitDataError, load_pkl
from gaitkd.data.check import ERROR, KINDS, assert_clean, check_dataset

SIZE, FRAMES = (64, 44), 3
CLEAN_IDS = ("001", "002", "003", "004")


def _pkl(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))
    return path


def _sil(frames: int = FRAMES, size: tuple[int, ...] = SIZE, dtype=np.uint8) -> np.ndarray:
    return np.zeros((frames, *size), dtype=dtype)


def _clean(root: Path, ids=CLEAN_IDS, name: str | None = None) -> list[str]:
    """Two clean sequences per id (``<view>.pkl`` unless ``name``); returns their ``id-type-view`` keys."""
    keys = []
    for sid in ids:
        for view in ("000", "090"):
            _pkl(root / sid / "nm-01" / view / (name or f"{view}.pkl"), _sil())
            keys.append(f"{sid}-nm-01-{view}")
    return keys


def _partition(path: Path, **sets) -> Path:
    path.write_text(json.dumps(sets))
    return path


def _defective(root: Path) -> dict[str, set[str]]:
    """Clean ids plus one defective id per planted case; returns ``{kind: planted locations}``."""
    planted: dict[str, set[str]] = defaultdict(set)
    keys = _clean(root)

    def plant(kind: str, rel: str) -> str:
        planted[kind].add(rel)
        return rel

    good = pickle.dumps(_sil())
    (root / plant("unreadable_pkl", "100/nm-01/000/000.pkl")).parent.mkdir(parents=True)
    (root / "100/nm-01/000/000.pkl").write_bytes(b"this is not a pickle")
    (root / plant("unreadable_pkl", "100/nm-01/090/090.pkl")).parent.mkdir(parents=True)
    (root / "100/nm-01/090/090.pkl").write_bytes(good[: len(good) // 2])  # truncated
    _pkl(root / plant("not_array", "101/nm-01/000/000.pkl"), [[0, 1], [1, 0]])
    _pkl(root / plant("wrong_dtype", "102/nm-01/000/000.pkl"), _sil(dtype=np.float32))
    _pkl(root / plant("wrong_rank", "103/nm-01/000/000.pkl"), np.zeros(SIZE, np.uint8))
    _pkl(root / plant("empty_sequence", "104/nm-01/000/000.pkl"), _sil(frames=0))
    _pkl(root / plant("shape_outlier", "105/nm-01/000/000.pkl"), _sil(size=(2 * SIZE[0], 2 * SIZE[1])))
    # two modalities with different T: a frame-count mismatch, and more pkls than the usual one
    _pkl(root / "106/nm-01/000/a.pkl", _sil(FRAMES))
    _pkl(root / "106/nm-01/000/b.pkl", _sil(FRAMES + 1))
    plant("frame_count_mismatch", "106/nm-01/000")
    plant("modality_count_mismatch", "106/nm-01/000")
    (root / plant("empty_folder", "107/nm-01/000")).mkdir(parents=True)  # empty view
    (root / plant("empty_folder", "107/nm-02")).mkdir(parents=True)  # empty type
    (root / plant("empty_folder", "108")).mkdir()  # empty id
    (root / plant("sequence_without_pkl", "109/nm-01/000")).mkdir(parents=True)
    (root / plant("stray_file", "109/nm-01/000/notes.txt")).write_text("x")
    _clean(root, ids=("110",))
    (root / plant("stray_file", "110/nm-01/000/Thumbs.db")).write_bytes(b"\0")
    _pkl(root / plant("misplaced_pkl", "110/nm-01/loose.pkl"), _sil())  # pkl without its view folder
    _pkl(root / plant("misplaced_pkl", "110/top.pkl"), _sil())
    (root / plant("not_a_folder", "110/nm-02")).write_text("a file where a type folder belongs")
    (root / plant("not_a_folder", "README.txt")).write_text("root-level file")
    _pkl(root / plant("unexpected_folder", "110/nm-01/090/extra") / "000.pkl", _sil())
    keys += _clean(root, ids=("050",))  # on disk, in no set
    plant("unlisted_id", "050")
    defect_ids = sorted({p.split("/")[0] for locs in planted.values() for p in locs} - {"050", "README.txt"})
    train = [*CLEAN_IDS[:2], *defect_ids, plant("id_in_both_sets", CLEAN_IDS[2])]
    test = [*CLEAN_IDS[2:], plant("partition_id_missing", "999")]
    probe = [keys[-3], plant("probe_missing", f"{CLEAN_IDS[-1]}-nm-01-180")]
    _partition(root / "partition.json", TRAIN_SET=train, TEST_SET=test, PROBE_SET=probe)
    return planted


def _locations(report, kind: str) -> set[str]:
    return {where for where, _ in report.issues[kind].examples}


def test_every_planted_defect_found_with_count_and_location(tmp_path):
    planted = _defective(tmp_path)
    assert len(planted) >= 15
    report = check_dataset(tmp_path)
    assert report.counts == {kind: len(locs) for kind, locs in planted.items()}
    for kind, locs in planted.items():
        assert _locations(report, kind) == locs, kind
        assert report.issues[kind].severity == KINDS[kind][0]
    assert report.majority_shape == SIZE
    assert not report.ok and {i.kind for i in report.errors} == {k for k in planted if KINDS[k][0] == ERROR}
    text = str(report)
    assert all(kind in text for kind in planted)


def test_pkl_verdicts_agree_with_load_pkl(tmp_path):
    """A pkl the checker calls bad is refused by the loader, a pkl it accepts loads."""
    planted = _defective(tmp_path)
    for kind in ("unreadable_pkl", "not_array", "wrong_dtype", "wrong_rank", "empty_sequence"):
        for rel in planted[kind]:
            with pytest.raises(GaitDataError):
                load_pkl(tmp_path / rel)
    for path in (tmp_path / CLEAN_IDS[0]).rglob("*.pkl"):
        assert load_pkl(path).dtype == np.uint8


def test_clean_tree_reports_nothing(tmp_path):
    keys = _clean(tmp_path)
    half = len(CLEAN_IDS) // 2
    part = _partition(tmp_path / "split.json", TRAIN_SET=list(CLEAN_IDS[:half]), TEST_SET=list(CLEAN_IDS[half:]),
                      PROBE_SET=keys[-1:])
    report = check_dataset(tmp_path, part)
    assert report.counts == {} and report.ok
    assert report.sequences == len(keys) and report.pkls == len(keys)
    assert assert_clean(tmp_path, part).ok


def test_threaded_decode_matches_serial(tmp_path):
    planted = _defective(tmp_path)
    _clean(tmp_path, ids=[f"2{i:02d}" for i in range(40)])  # enough pkls for the thread pool
    serial, threaded = check_dataset(tmp_path, workers=1), check_dataset(tmp_path, workers=2)
    assert serial.counts == threaded.counts
    assert serial.counts["unlisted_id"] == 40 + len(planted["unlisted_id"])


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (None, "partition_unreadable"),  # file does not exist
        ("{not json", "partition_unreadable"),
        ('["001"]', "partition_unreadable"),
        ('{"TRAIN_SET": [1, 2], "TEST_SET": ["003"]}', "partition_unreadable"),
        ('{"TRAIN_SET": ["001"]}', "partition_missing_key"),
    ],
)
def test_bad_partition_files(tmp_path, content, kind):
    root = tmp_path / "data"
    _clean(root)
    part = tmp_path / "part.json"
    if content is not None:
        part.write_text(content)
    report = check_dataset(root, part)
    assert report.issues[kind].count == 1 and not report.ok
    assert set(report.counts) <= {kind, "partition_id_missing", "unlisted_id"}


def test_both_keys_missing_counted_separately(tmp_path):
    _clean(tmp_path / "data")
    part = _partition(tmp_path / "p.json", PROBE_SET=[])
    assert check_dataset(tmp_path / "data", part).counts["partition_missing_key"] == 2


def test_missing_modality_and_missing_root(tmp_path):
    _clean(tmp_path, name="sils.pkl")
    _pkl(tmp_path / "005/nm-01/000/other.pkl", _sil())
    report = check_dataset(tmp_path, modalities=["sils"])
    assert report.counts == {"modality_missing": 1}
    assert _locations(report, "modality_missing") == {"005/nm-01/000"}
    assert check_dataset(tmp_path / "nope").counts == {"root_missing": 1}
    (tmp_path / "empty").mkdir()
    assert check_dataset(tmp_path / "empty").counts == {"no_sequences": 1}


def test_assert_clean_raises_with_report_text(tmp_path):
    _defective(tmp_path)
    with pytest.raises(GaitDataError, match="unreadable_pkl") as err:
        assert_clean(tmp_path)
    assert "frame_count_mismatch" in str(err.value)


def test_cli_exit_codes(tmp_path, capsys):
    bad, good = tmp_path / "bad", tmp_path / "good"
    _defective(bad)
    with pytest.raises(SystemExit) as exc:
        main(["check-data", str(bad)])
    assert exc.value.code != 0
    assert "shape_outlier" in capsys.readouterr().out
    _clean(good)
    part = _partition(tmp_path / "p.json", TRAIN_SET=list(CLEAN_IDS[:2]), TEST_SET=list(CLEAN_IDS[2:]))
    main(["check-data", str(good), "--partition", str(part)])  # no SystemExit on a clean tree
    assert "OK" in capsys.readouterr().out
