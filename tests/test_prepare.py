"""`gaitkd prepare`: real silhouette GIFs (and a PNG folder) -> OpenGait pkls, resumability, loading and a model run."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from gaitkd.cli import main
from gaitkd.data import GaitSequenceDataset
from gaitkd.data.prepare import (
    MIN_FRAME_SUM,
    SHORT_SEQUENCE,
    PrepareError,
    find_sequences,
    output_path,
    prepare,
    pretreat,
    read_frames,
    sequence_key,
)
from gaitkd.models import GaitSet

REAL = Path(os.environ.get("GAITKD_REAL_SILS", Path(__file__).resolve().parents[2] / "shared/data/real_silhouettes"))
SIZE = 64


def _gif_frames(name: str) -> np.ndarray:
    path = REAL / f"{name}.gif"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with Image.open(path) as img:
        return np.stack([np.asarray(f.convert("L")) for f in ImageSequence.Iterator(img)])


def _half_mass_column(sils: np.ndarray) -> np.ndarray:
    cum = np.cumsum(sils.sum(1, dtype=np.int64), axis=1)
    return np.argmax(cum > 0.5 * cum[:, -1:], axis=1)


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], int]:
    """CASIA-B-like tree: nm/bg as ``<id>/<type>/<view>.gif``, cl as a PNG folder with one planted blank frame."""
    root = tmp_path_factory.mktemp("raw")
    frames = {cond: _gif_frames(cond) for cond in ("nm", "bg", "cl")}
    for cond in ("nm", "bg"):
        (root / "001" / f"{cond}-01").mkdir(parents=True)
        shutil.copy(REAL / f"{cond}.gif", root / "001" / f"{cond}-01" / "090.gif")
    folder = root / "001" / "cl-01" / "090"
    folder.mkdir(parents=True)
    blank_at = len(frames["cl"]) // 2
    seq = np.insert(frames["cl"], blank_at, 0, axis=0)
    seq[blank_at, :2, :2] = 255  # a few stray pixels: still far below the drop threshold
    assert seq[blank_at].sum() <= MIN_FRAME_SUM
    for i, frame in enumerate(seq):
        Image.fromarray(frame).save(folder / f"001-cl-01-090-{i + 1:03d}.png")
    return root, frames, 1


@pytest.fixture(scope="module")
def prepared(raw_tree, tmp_path_factory: pytest.TempPathFactory):
    root, _, _ = raw_tree
    out = tmp_path_factory.mktemp("pkl")
    return out, prepare("casia_b", root, out, workers=2, progress=False)


def test_pkls_follow_opengait_rule(raw_tree, prepared) -> None:
    _, frames, planted = raw_tree
    out, summary = prepared
    assert summary.written == 3 and summary.skipped == 0 and not summary.failed and not summary.empty
    assert summary.dropped_frames == planted
    assert summary.frames == sum(len(f) for f in frames.values())
    for cond, raw in frames.items():
        sils = pickle.loads(output_path(out, ("001", f"{cond}-01", "090")).read_bytes())
        assert sils.dtype == np.uint8 and sils.shape == (len(raw), SIZE, SIZE)
        # rows cropped to the body and resized: the silhouette touches the top and (mostly) the bottom row
        assert (sils[:, 0].max(1) > 0).all() and (sils[:, -1].max(1) > 0).mean() > 0.9
        assert np.abs(_half_mass_column(sils) - SIZE // 2).max() <= 1, f"{cond}: body not centred"
        # the body is much taller than wide: (almost) no mass in the outer eighths (a coat tail may reach in)
        mass = sils.sum((0, 1), dtype=np.int64)
        assert mass[: SIZE // 8].sum() < 0.01 * mass.sum() and mass[-SIZE // 8 :].sum() < 0.01 * mass.sum()
    # the PNG folder (with its blank frame dropped) gives exactly what the GIF's own frames give
    png = pickle.loads(output_path(out, ("001", "cl-01", "090")).read_bytes())
    np.testing.assert_array_equal(png, pretreat(frames["cl"], SIZE)[0])


def test_second_run_skips_and_repairs(raw_tree, prepared) -> None:
    root, _, _ = raw_tree
    out, _ = prepared
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pkl")}
    again = prepare("casia_b", root, out, workers=1, progress=False)
    assert again.skipped == len(stamps) and again.written == 0 and again.frames == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pkl")} == stamps
    broken = output_path(out, ("001", "nm-01", "090"))
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 3])  # an interrupted foreign write: not a valid pkl any more
    fixed = prepare("casia_b", root, out, workers=1, progress=False)
    assert fixed.written == 1 and fixed.skipped == len(stamps) - 1
    assert broken.read_bytes() == good


def test_dataset_and_gaitset_run_on_prepared(prepared) -> None:
    out, summary = prepared
    data = GaitSequenceDataset(out)
    assert len(data) == summary.written
    model = GaitSet().eval()
    for i in range(len(data)):
        seq = data[i]
        assert seq.shape[1:] == (SIZE, SIZE - 2 * (SIZE // 64 * 10))
        with torch.no_grad():
            emb = model(torch.from_numpy(seq[None] / 255.0).float()).embeddings
        assert emb.shape == (1, 256, model.parts_num) and torch.isfinite(emb).all()  # GaitSet's default width


def test_pretreat_rule_on_a_rectangle() -> None:
    """A bright box anywhere in a frame -> a full-height box centred at ``SIZE // 2``; near-empty frames dropped."""
    frames = np.zeros((3, 3 * SIZE, 4 * SIZE), np.uint8)
    h, w = 2 * SIZE, SIZE // 2  # box twice the output height -> halved
    frames[0, 10 : 10 + h, 5 : 5 + w] = 255
    frames[1, SIZE - 1 :, -w:] = 255  # touching the bottom-right corner: zero padding on the right
    frames[1, : SIZE - 1] = 0
    frames[2].flat[: MIN_FRAME_SUM // 255] = 255
    frames[2].flat[MIN_FRAME_SUM // 255] = MIN_FRAME_SUM % 255  # grey sum exactly at the threshold: dropped
    assert frames[2].sum() == MIN_FRAME_SUM
    sils, dropped = pretreat(frames, SIZE)
    assert dropped == 1 and sils.shape == (2, SIZE, SIZE)
    expect = np.zeros((SIZE, SIZE), np.uint8)
    expect[:, SIZE // 2 - w // 2 * SIZE // h : SIZE // 2 + w // 2 * SIZE // h] = 255
    np.testing.assert_array_equal(sils[0], expect)
    assert np.abs(_half_mass_column(sils) - SIZE // 2).max() <= 1
    assert (sils[1, 0] > 0).any() and (sils[1, -1] > 0).any()


def test_empty_and_short_sequences(tmp_path: Path) -> None:
    frame = np.zeros((SIZE * 2, SIZE * 2), np.uint8)
    frame[20:100, 50:70] = 255
    for typ, n_body, n_blank in (("nm-01", SHORT_SEQUENCE - 1, 1), ("nm-02", 0, 3)):
        folder = tmp_path / "raw" / "007" / typ / "000"
        folder.mkdir(parents=True)
        for i in range(n_body + n_blank):
            Image.fromarray(frame if i < n_body else np.zeros_like(frame)).save(folder / f"{i:03d}.png")
    summary = prepare("generic", tmp_path / "raw", tmp_path / "out", progress=False)
    assert summary.empty == ["007/nm-02/000"] and summary.short == ["007/nm-01/000"]
    assert summary.dropped_frames == 1 + 3 and summary.frames == SHORT_SEQUENCE - 1
    assert not output_path(tmp_path / "out", ("007", "nm-02", "000")).exists()


def test_sequence_keys_and_layout_errors(tmp_path: Path) -> None:
    assert sequence_key("oumvlp", ("x", "Silhouette_030-01", "00042"), tmp_path) == ("00042", "01", "030")
    assert sequence_key("oumvlp", ("00042", "01", "030"), tmp_path) == ("00042", "01", "030")
    assert sequence_key("gait3d", ("d", "0001", "camid0_videoid2", "seq0"), tmp_path) == (
        "0001", "camid0_videoid2", "seq0")
    with pytest.raises(PrepareError, match="<id>/<type>/<view>"):
        sequence_key("generic", ("only", "two"), tmp_path)
    with pytest.raises(PrepareError, match="unknown dataset"):
        find_sequences("casia", tmp_path)
    with pytest.raises(PrepareError, match="no frame folders"):
        find_sequences("generic", tmp_path)
    with pytest.raises(PrepareError, match="does not exist"):
        find_sequences("generic", tmp_path / "missing")
    seq_dir = tmp_path / "001" / "nm-01" / "000"
    seq_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(seq_dir / "1.png")
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(seq_dir / "2.png")
    (seq, *_) = find_sequences("casia_b", tmp_path)
    with pytest.raises(PrepareError, match="differ in size"):
        read_frames(seq)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(seq_dir.parent / "000.gif")
    with pytest.raises(PrepareError, match="both sequence 001/nm-01/000"):
        find_sequences("casia_b", tmp_path)


def test_cli_prepare(raw_tree, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, frames, _ = raw_tree
    main(["prepare", "casia_b", str(root), str(tmp_path), "--workers", "1"])
    text = capsys.readouterr().out
    assert "sequences written" in text and "frames dropped" in text
    assert len(list(tmp_path.rglob("*.pkl"))) == len(frames)
    for bad in (["casia_b", str(tmp_path / "missing")], ["casia", str(root)]):
        with pytest.raises(SystemExit):
            main(["prepare", *bad, str(tmp_path)])
        assert "gaitkd: error" in capsys.readouterr().out
