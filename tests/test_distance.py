"""GalleryDistances: tiling, gallery selection and buffers agree with a float64 reference of OpenGait's distance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gaitkd.evaluation import distance
from gaitkd.evaluation.distance import GalleryDistances, pairwise_distance

REPO = Path(__file__).resolve().parents[1]


def _reference(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """The fixtures README §1 formulas in float64, part by part."""
    x, y = x.double(), y.double()
    if metric == "cos":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1 - torch.einsum("icp,jcp->ij", x, y) / x.shape[2]
    diff = x[:, None] - y[None]  # [n1, n2, C, P]
    return diff.pow(2).sum(2).sqrt().mean(-1)


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles and layout steps that do not divide the sizes below, so every edge case of the tiling runs."""
    monkeypatch.setattr(distance, "_TILE_ROWS", 3)
    monkeypatch.setattr(distance, "_TILE_COLS", 5)
    monkeypatch.setattr(distance, "_LAYOUT_ROWS", 4)


@pytest.mark.parametrize("metric", ["euc", "cos"])
@pytest.mark.parametrize("tiled", [False, True])
def test_gallery_distances_match_reference(metric: str, tiled: bool, request: pytest.FixtureRequest) -> None:
    if tiled:
        request.getfixturevalue("small_tiles")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(11, 7, 5, generator=gen), torch.randn(13, 7, 5, generator=gen)
    y[4] = x[2]  # identical vectors: float32 cancellation leaves ~1e-3 for euc (fixtures §1), cos stays exact
    got = GalleryDistances(y, metric)(x)
    ref = _reference(x, y, metric).float()
    same = torch.zeros_like(got, dtype=torch.bool)
    same[2, 4] = True
    torch.testing.assert_close(got[~same], ref[~same], rtol=1e-5, atol=1e-5)
    assert abs(got[2, 4] - ref[2, 4]) <= 2e-3
    # the tiled result is the same computation in other pieces
    torch.testing.assert_close(pairwise_distance(x, y, metric, chunk=4), got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_gallery_index_and_reused_buffer(metric: str, small_tiles: None) -> None:
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(20, 6, 3, generator=gen)
    index = np.array([17, 3, 3, 9, 0, 12, 5, 19, 8])
    dists = GalleryDistances(emb, metric, index=index)
    assert dists.size == len(index)
    out = torch.full((6, len(index)), float("nan"))
    first = dists(emb[:6], out=out)
    assert first.data_ptr() == out.data_ptr()
    torch.testing.assert_close(first, _reference(emb[:6], emb[index], metric).float(), rtol=1e-5, atol=2e-3)
    again = dists(emb, out=out, index=index[:6])  # the buffer is overwritten, not accumulated into
    torch.testing.assert_close(again, _reference(emb[index[:6]], emb[index], metric).float(), rtol=1e-5, atol=2e-3)


def test_gallery_distances_reject_bad_input() -> None:
    dists = GalleryDistances(torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match=r"share \[C, P\]"):
        dists(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="contiguous"):
        dists(torch.randn(2, 3, 2), out=torch.empty(2, 5))
    with pytest.raises(ValueError, match="metric"):
        GalleryDistances(torch.randn(4, 3, 2), metric="l2")
    with pytest.raises(ValueError, match=r"row numbers in \[0, 4\)"):
        GalleryDistances(torch.randn(4, 3, 2), index=np.array([0, 4]))
    assert dists(torch.randn(0, 3, 2)).shape == (0, 4)


def test_eval_scale_benchmark_quick(tmp_path: Path) -> None:
    """The benchmark script runs end to end at tiny sizes; it reports positive timings (speed is not asserted)."""
    out = tmp_path / "eval_scale.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "eval_scale.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"] for r in rows} == {"casia_b_16", "oumvlp_16"}
    for row in rows:
        for key in ("bare_products_s", "single_view_s", "single_view_ratio", "peak_rss_gb"):
            assert row[key] > 0, (row["case"], key)
        assert row["probes"] > 0 and row["gallery"] > 0
        assert 0.0 <= row["single_view_result"]["NM@R1"] <= 100.0


def test_rounding_negative_squares_are_clamped() -> None:
    """Self-distances of large vectors round below zero in float32; the tile is redone with the relu, no NaN."""
    x = torch.randn(64, 16, 4, generator=torch.Generator().manual_seed(0)) * 10
    dists = GalleryDistances(x)
    got = dists(x)
    assert dists.redone == 1  # one tile, redone once
    assert not got.isnan().any()
    assert got.diagonal().max() <= 2e-2 and got.diagonal().min() >= 0  # |x|² ≈ 1600: float32 noise, not 0
    off = ~torch.eye(64, dtype=torch.bool)
    torch.testing.assert_close(got[off], _reference(x, x, "euc").float()[off], rtol=1e-5, atol=1e-4)


def test_non_finite_embeddings_are_refused() -> None:
    x = torch.randn(5, 3, 2)
    x[3, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="contain NaN or inf"):
        pairwise_distance(x, x)


@pytest.mark.parametrize("n", [1, 15, 17, 1100, 2023, 2200, 3300, 18200, 72156])
def test_tile_lengths_are_aligned_and_do_not_add_tiles(n):
    length = distance._even(n, 2048)
    assert length <= 2048 and length % 16 == 0
    assert -(-n // length) == -(-n // 2048)  # as few tiles as 2048-wide ones would need
    assert n - (-(-n // length) - 1) * length > 0  # the last tile is not empty
