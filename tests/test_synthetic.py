"""Synthetic CASIA-B generator: OpenGait layout, determinism, identity/condition/view structure and the cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from gaitkd.data import synthetic
from gaitkd.data.synthetic import CASIA_TYPES, CASIA_VIEWS, ensure_synthetic, generate, sequence
from gaitkd.data.walker import project, sample_identity, sample_walk, skeleton

SMALL = {"num_ids": 4, "views": ["000", "090", "162"], "frames": (12, 20), "num_train": 3, "seed": 3}


def _pkls(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.pkl"))}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "root", progress=False, workers=1, **SMALL)


def _gei(seed: int, sid: int, type_: str, view: str) -> np.ndarray:
    """Gait energy image ``[H*W]`` in [0, 1]."""
    return sequence(seed, sid, type_, view, frames=(30, 40)).astype(np.float32).mean(0).ravel() / 255.0


def test_layout_dtype_shape_and_frame_range(small_root: Path) -> None:
    lo, hi = SMALL["frames"]
    ids = sorted(p.name for p in small_root.iterdir() if p.is_dir())
    assert ids == [f"{i:03d}" for i in range(1, SMALL["num_ids"] + 1)]
    for sid in ids:
        assert sorted(p.name for p in (small_root / sid).iterdir()) == sorted(CASIA_TYPES)
        for type_ in CASIA_TYPES:
            assert sorted(p.name for p in (small_root / sid / type_).iterdir()) == SMALL["views"]
    for path in small_root.rglob("*.pkl"):
        assert path.name == f"{path.parent.name}.pkl"
        with open(path, "rb") as f:
            arr = pickle.load(f)
        assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8
        assert arr.ndim == 3 and arr.shape[1:] == (64, 44) and lo <= arr.shape[0] <= hi
        assert arr.max() == 255 and ((arr > 0) & (arr < 255)).any(), "expected soft (anti-aliased) edges"


def test_frames_are_normalised_like_opengait(small_root: Path) -> None:
    """Head at the top row; the column where the cumulative mass passes half is the centre column."""
    with open(small_root / "002" / "nm-01" / "090" / "090.pkl", "rb") as f:
        arr = pickle.load(f).astype(np.float64)
    rows = arr.sum(2)  # [T, H]
    # The bottom row can be empty when a foot sticks out of the kept columns (as with OpenGait's 64 -> 44 cut).
    assert (rows[:, 0] > 0).all() and (rows[:, -1] > 0).mean() > 0.5
    cum = np.cumsum(arr.sum(1), axis=1)
    centre = np.argmax(cum > 0.5 * cum[:, -1:], axis=1)
    assert np.abs(centre - arr.shape[2] // 2).max() <= 1


def test_crop_and_centre_matches_pretreatment_rule() -> None:
    """Rows cropped to the mask and resized to the output height; the half-mass column lands at ``width // 2``."""
    height, width = 20, 16
    cov = np.zeros((2, 40, 60), np.float32)
    cov[0, 5 : 5 + height, 10:20] = 1.0  # already `height` tall: an exact copy, shifted to the centre
    cov[1, 4:34, 30:45] = 1.0  # 1.5x too tall: shrunk to `height` rows and 10 columns
    out = synthetic._crop_and_centre(cov, height, width)
    assert out.shape == (2, height, width)
    expected = np.zeros((height, width), np.float32)
    expected[:, width // 2 - 5 : width // 2 + 5] = 1.0
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert (out[1].sum(1) > 0).all(), "resized mask must span every output row"
    np.testing.assert_allclose(out[1].sum(), height * 10, rtol=0.05)
    cum = np.cumsum(out[1].sum(0))
    assert abs(int(np.argmax(cum > 0.5 * cum[-1])) - width // 2) <= 1


def test_partition_and_stamp(small_root: Path) -> None:
    part = json.loads((small_root / "partition.json").read_text())
    assert set(part) == {"TRAIN_SET", "TEST_SET"}
    train, test = part["TRAIN_SET"], part["TEST_SET"]
    assert len(train) == SMALL["num_train"] and not set(train) & set(test)
    assert sorted(train + test) == sorted(p.name for p in small_root.iterdir() if p.is_dir())
    stamp = json.loads((small_root / "synthetic.json").read_text())
    assert stamp["format_version"] == synthetic.FORMAT_VERSION
    assert stamp["params"]["num_ids"] == SMALL["num_ids"] and stamp["params"]["views"] == SMALL["views"]


def test_deterministic_and_subset_independent(small_root: Path, tmp_path: Path) -> None:
    """Fewer ids, another type order and 2 workers still give byte-identical pkls for the shared sequences."""
    sub = dict(SMALL, num_ids=2, num_train=1, types=list(reversed(CASIA_TYPES))[:4], views=SMALL["views"][::-1])
    again = _pkls(generate(tmp_path / "sub", progress=False, workers=2, **sub))
    full = _pkls(small_root)
    assert again and all(full[k] == v for k, v in again.items())
    other = sequence(SMALL["seed"] + 1, 1, "nm-01", "090", frames=SMALL["frames"])
    with open(small_root / "001" / "nm-01" / "090" / "090.pkl", "rb") as f:
        same = pickle.load(f)
    assert other.shape != same.shape or not np.array_equal(other, same)


def test_identity_dominates_walk_noise() -> None:
    """Same-view GEIs: two NM walks of one person are closer than walks of two different people (on average)."""
    ids, view = range(1, 6), "054"
    geis = {(i, t): _gei(0, i, t, view) for i in ids for t in ("nm-01", "nm-02")}
    intra = np.mean([np.linalg.norm(geis[i, "nm-01"] - geis[i, "nm-02"]) for i in ids])
    inter = np.mean([np.linalg.norm(geis[i, "nm-01"] - geis[j, "nm-02"]) for i in ids for j in ids if i != j])
    assert intra < 0.7 * inter


def test_view_projection_geometry() -> None:
    """000 sees the hips side by side (mirrored at 180); 090 sees them overlap and the feet point to the right."""
    walk = sample_walk(np.random.default_rng(0), sample_identity(np.random.default_rng(1)), "nm")
    j = skeleton(walk, np.linspace(0.0, 2 * np.pi, 8))
    hips = {v: project(j["hip_r"], v)[:, 0] - project(j["hip_l"], v)[:, 0] for v in (0, 90, 180)}
    width = np.linalg.norm(j["hip_r"] - j["hip_l"], axis=1)
    np.testing.assert_allclose(hips[0], -hips[180], atol=1e-9)
    assert (hips[0] < -0.9 * width).all() and (np.abs(hips[90]) < 0.3 * width).all()
    assert (project(j["toe_r"], 90)[:, 0] > project(j["ankle_r"], 90)[:, 0]).all()


def test_bag_coat_and_view_change_the_silhouette() -> None:
    ids = range(1, 5)
    nm = {i: (_gei(1, i, "nm-01", "090"), _gei(1, i, "nm-02", "090")) for i in ids}
    d_nm = np.mean([np.linalg.norm(a - b) for a, b in nm.values()])
    for type_ in ("bg-01", "cl-01"):
        d_cond = np.mean([np.linalg.norm(_gei(1, i, type_, "090") - nm[i][0]) for i in ids])
        assert d_cond > 1.5 * d_nm, type_
    d_view = np.mean([np.linalg.norm(_gei(1, i, "nm-01", "000") - nm[i][0]) for i in ids])
    assert d_view > 2.0 * d_nm


def test_ensure_synthetic_reuses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = synthetic.generate

    def counting(root, **kw):
        calls.append(Path(root))
        return real(root, **kw)

    monkeypatch.setattr(synthetic, "generate", counting)
    params = dict(num_ids=2, views=1, types=["nm-01", "cl-01"], frames=(8, 10), progress=False, workers=1)
    first = ensure_synthetic(tmp_path, **params)
    stamp_mtime = (first / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, **params) == first and len(calls) == 1
    assert (first / "synthetic.json").stat().st_mtime_ns == stamp_mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no temporary folder may be left behind"
    assert ensure_synthetic(tmp_path, **dict(params, seed=1)) != first and len(calls) == 2
    (first / "synthetic.json").write_text("{}")  # a stale/foreign stamp triggers regeneration in place
    assert ensure_synthetic(tmp_path, **params) == first and len(calls) == 3
    assert json.loads((first / "synthetic.json").read_text())["params"]["num_ids"] == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"types": ["xx-01"]}, "xx-01"), ({"frames": (10, 5)}, "frames"), ({"num_train": 9}, "num_train"),
     ({"views": 0}, "views"), ({"views": ["090", "90"]}, "duplicates"), ({"seed": -1}, "seed")],
)
def test_bad_parameters_raise(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path, progress=False, **dict({"num_ids": 2}, **kwargs))
    assert not list(tmp_path.iterdir())


def test_cli_writes_tree(tmp_path: Path) -> None:
    synthetic.main([str(tmp_path), "--ids", "2", "--num-views", "2", "--types", "nm-01", "--frames", "5", "6",
                    "--workers", "1", "--width", "64", "--quiet"])
    files = sorted(tmp_path.rglob("*.pkl"))
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"{i}/nm-01/{v}/{v}.pkl" for i in ("001", "002") for v in (CASIA_VIEWS[0], CASIA_VIEWS[-1])
    ]
    with open(files[0], "rb") as f:
        assert pickle.load(f).shape[1:] == (64, 64)
