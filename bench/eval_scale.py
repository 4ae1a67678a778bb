"""Evaluation at full dataset scale: protocol wall time and peak RSS vs the bare per-part matrix products.

    .venv/bin/python bench/eval_scale.py                       # CASIA-B size (16 and 62 parts) + full OU-MVLP
    .venv/bin/python bench/eval_scale.py --cases casia_b_16    # one case
    .venv/bin/python bench/eval_scale.py --quick               # tiny sizes, seconds (what the test runs)

Each case runs in its own process (so its peak RSS is its own) on random float32 embeddings ``[N, C, P]`` with the
dataset's naming (CASIA-B: 50 ids x 10 types x 11 views; OU-MVLP: 5,154 ids x 2 sequences x 14 views). In that
process, in this order: ``gaitkd.evaluation.evaluate`` (the single-view protocol, then the cross-view one where the
case has it), the peak RSS (``ru_maxrss`` of the process so far, embeddings included), then the bare products:
for every part the probe x gallery GEMM ``X_p Y_p^T`` on part-major copies into reused buffers, nothing else (the
work any exact method must do, the faster of two tilings: see ``bare_products``).
Ratio = protocol wall time / bare-products wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gaitkd.evaluation import evaluate
from gaitkd.evaluation.indoor import CROSS_VIEW, SINGLE_VIEW

CASIA_TYPES = [f"nm-{i:02d}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]
CASIA_VIEWS = [f"{v:03d}" for v in range(0, 181, 18)]
OUMVLP_VIEWS = [f"{v:03d}" for v in [*range(0, 91, 15), *range(180, 271, 15)]]
# name -> (protocol, ids, channels, parts, cross-view too, repeats: the median of that many timed calls)
CASES = {
    "casia_b_16": ("casia_b", 50, 256, 16, True, 5),
    "casia_b_62": ("casia_b", 50, 256, 62, True, 3),
    "oumvlp_16": ("oumvlp", 5154, 256, 16, True, 1),
    "oumvlp_single": ("oumvlp", 5154, 256, 16, False, 1),  # single-view only (`make bench`'s time budget)
    "oumvlp_quarter": ("oumvlp", 2577, 256, 16, False, 1),  # half the ids: a quarter of the products
}
QUICK = {
    "casia_b_16": ("casia_b", 6, 32, 16, True, 1),
    "oumvlp_16": ("oumvlp", 40, 32, 16, True, 1),
}
# cases that time only the tiled products (the fastest way at OU-MVLP size on a quiet machine, bench/README.md):
# saves ~4 min there
FEWER_WAYS = {"oumvlp_single": ("tiled",)}
BLOCK_ELEMENTS, TILE = 1 << 25, 2048  # bare products: full-width output block (128 MB) or square tiles
WAYS = ("full_width", "tiled", "batched")


def test_set(protocol: str, ids: int) -> tuple[list[str], list[str], list[str]]:
    """Labels, types, views of a complete test set in the dataset's naming, sorted like OpenGait's lists."""
    types, views = (CASIA_TYPES, CASIA_VIEWS) if protocol == "casia_b" else (["00", "01"], OUMVLP_VIEWS)
    grid = [(f"{i:05d}", t, v) for i in range(ids) for t in types for v in views]
    labels, typs, vies = (list(col) for col in zip(*grid))
    return labels, typs, vies


def bare_products(emb: torch.Tensor, probes: np.ndarray, gallery: np.ndarray) -> float:
    return min(bare_product_times(emb, probes, gallery).values())


def bare_product_times(emb: torch.Tensor, probes: np.ndarray, gallery: np.ndarray,
                       ways: tuple[str, ...] = WAYS) -> dict[str, float]:
    """Seconds of every per-part GEMM ``X_p Y_pᵀ`` (probes x gallery) into reused buffers, nothing else.

    Part-major copies are made first and not timed. Three ways are timed and the fastest counts: one GEMM per part
    over the full gallery width per block of probe rows, one per part and 2048 x 2048 output tile, and one batched
    GEMM (all parts) per tile of a 128 MB ``[P, rows, cols]`` stack (the tiling ``GalleryDistances`` uses): this is
    the floor an exact per-part distance cannot go below. ``ways``: which of them to time.
    """
    xp = emb[torch.as_tensor(probes)].permute(2, 0, 1).contiguous()  # [P, nq, C]
    yp = emb[torch.as_tensor(gallery)].permute(2, 0, 1).contiguous()  # [P, ng, C]
    nq, ng = xp.shape[1], yp.shape[1]
    cols = min(TILE, ng)
    shapes = {"full_width": (max(1, BLOCK_ELEMENTS // ng), ng), "tiled": (min(TILE, nq), cols),
              "batched": (min(TILE, nq, max(1, BLOCK_ELEMENTS // (xp.shape[0] * cols))), cols)}
    return {way: _products(xp, yp, *shapes[way], batched=way == "batched") for way in ways}


def _products(xp: torch.Tensor, yp: torch.Tensor, rows: int, cols: int, batched: bool = False) -> float:
    parts, nq, ng = xp.shape[0], xp.shape[1], yp.shape[1]
    buffer = torch.empty(rows * cols * (parts if batched else 1))
    start = time.perf_counter()
    for r0 in range(0, nq, rows):
        for c0 in range(0, ng, cols):
            shape = (min(rows, nq - r0), min(cols, ng - c0))
            if batched:
                out = buffer[: parts * shape[0] * shape[1]].view(parts, *shape)
                torch.bmm(xp[:, r0 : r0 + rows], yp[:, c0 : c0 + cols].transpose(1, 2), out=out)
                continue
            out = buffer[: shape[0] * shape[1]].view(shape)
            for p in range(parts):
                torch.mm(xp[p, r0 : r0 + rows], yp[p, c0 : c0 + cols].T, out=out)
    return time.perf_counter() - start


def run_case(name: str, quick: bool) -> dict:
    protocol, ids, channels, parts, cross, repeats = (QUICK if quick else CASES)[name]
    labels, types, views = test_set(protocol, ids)
    emb = torch.randn(len(labels), channels, parts, generator=torch.Generator().manual_seed(0))
    typ = np.asarray(types)
    spec = SINGLE_VIEW[protocol]
    probes = np.flatnonzero(np.isin(typ, [t for ts in spec.probe_types.values() for t in ts]))
    gallery = np.flatnonzero(np.isin(typ, spec.gallery_types))
    row = {
        "case": name, "protocol": protocol, "sequences": len(labels), "channels": channels, "parts": parts,
        "probes": len(probes), "gallery": len(gallery), "threads": torch.get_num_threads(),
        "embeddings_gb": emb.numel() * 4 / 1024**3,
    }
    warm = slice(0, len(labels) // ids * 2)  # two identities: thread pools and first-call paths warmed up
    evaluate(protocol, emb[warm], labels[warm], types[warm], views[warm])
    # The protocols run first so that the peak RSS is theirs: the bare products' part-major copies come after.
    row["single_view_runs"], result = _timed(lambda: evaluate(protocol, emb, labels, types, views), repeats)
    row["single_view_s"] = float(np.median(row["single_view_runs"]))
    row["single_view_result"] = {k: v for k, v in result.items() if isinstance(v, float)}
    if cross:  # the cross-view gallery is every non-probe type: other products, measured on their own
        row["cross_view_runs"], _ = _timed(
            lambda: evaluate(protocol, emb, labels, types, views, cross_view_gallery=True), repeats)
        row["cross_view_s"] = float(np.median(row["cross_view_runs"]))
    row["peak_rss_gb"] = _peak_rss_gb()
    chosen = FEWER_WAYS.get(name, WAYS)
    ways = [bare_product_times(emb, probes, gallery, chosen) for _ in range(repeats)]
    medians = {way: float(np.median([w[way] for w in ways])) for way in chosen}
    row.update({f"bare_{way}_s": value for way, value in medians.items()})
    fastest = min(medians, key=medians.get)
    row["bare_products_s"], row["bare_products_way"] = medians[fastest], fastest
    row["bare_products_runs"] = [w[fastest] for w in ways]
    if "full_width" in medians:
        row["single_view_ratio_full_width"] = row["single_view_s"] / row["bare_full_width_s"]
    row["bare_gflop"] = 2.0 * parts * len(probes) * len(gallery) * channels / 1e9
    row["bare_gflop_per_s"] = row["bare_gflop"] / row["bare_products_s"]
    row["single_view_ratio"] = row["single_view_s"] / row["bare_products_s"]
    if cross:
        spec = CROSS_VIEW[protocol]
        c_probes = np.flatnonzero(np.isin(typ, [t for ts in spec.probe_types.values() for t in ts]))
        c_gallery = np.flatnonzero(np.isin(typ, spec.gallery_types))
        same = np.array_equal(c_probes, probes) and np.array_equal(c_gallery, gallery)  # OU-MVLP: 00 vs 01 again
        row["cross_view_bare_runs"] = row["bare_products_runs"] if same else _timed(
            lambda: bare_products(emb, c_probes, c_gallery), repeats)[0]
        row["cross_view_bare_s"] = float(np.median(row["cross_view_bare_runs"]))
        row["cross_view_ratio"] = row["cross_view_s"] / row["cross_view_bare_s"]
    return row


def _timed(fn, repeats: int) -> tuple[list[float], object]:
    """(wall times of ``repeats`` calls, last return value); a float return value (``bare_products``) is taken as
    the call's own timing of its timed part."""
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(value if isinstance(value, float) else time.perf_counter() - start)
    return times, value


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def run_cases(cases: list[str], quick: bool = False, threads: int | None = None, log=print) -> list[dict]:
    """Run every case in its own process (peak RSS of its own) and return their rows."""
    rows = []
    for name in cases:
        cmd = [sys.executable, __file__, "--worker", name, *(["--quick"] if quick else []),
               *(["--threads", str(threads)] if threads else [])]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        cross = (f", cross-view {row['cross_view_s']:.2f} s = {row['cross_view_ratio']:.2f}x its products"
                 if "cross_view_s" in row else "")
        log(f"{name:>11}: {row['sequences']:,} seqs, {row['probes']:,} x {row['gallery']:,}; bare products "
            f"{row['bare_products_s']:.2f} s ({row['bare_gflop_per_s']:.0f} GFLOP/s); single-view "
            f"{row['single_view_s']:.2f} s = {row['single_view_ratio']:.3f}x ({row['bare_products_way']} products"
            + (f"; full-width: {row['single_view_ratio_full_width']:.3f}x" if "single_view_ratio_full_width" in row
               else "") + f"){cross}; peak RSS {row['peak_rss_gb']:.2f} GB")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=None, help=f"subset of {list(CASES)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks the script, not speed")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_scale.json")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = QUICK if args.quick else CASES
    if args.worker is not None:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args.worker, args.quick)))
        return
    cases = args.cases or list(table)
    unknown = sorted(set(cases) - set(table))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(table)}")
    rows = run_cases(cases, args.quick, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
