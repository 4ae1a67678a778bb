"""Evaluation against OpenGait's own outputs (fixtures README §1, §2.1, §2.2, §2.5, §6) + collector and report."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console

from conftest import load_fixture
from gaitkd.evaluation import EmbeddingCollector, canonical_protocol, compute_acc_map, evaluate, indoor
from gaitkd.evaluation.distance import GalleryDistances, pairwise_distance
from gaitkd.evaluation.report import per_view_table, plot_per_view_heatmap, print_result

# §6 tolerances
ATOL_ACC = 1e-6
ATOL_MAP_RAW = 5e-4
ATOL_MAP_ROUNDED = 0.011
ATOL_MAP_RESULT = 0.01
PREFIX = "scalar/test_accuracy/"
EVAL_FILES = ("eval_casiab.pt", "eval_oumvlp.pt")


@pytest.fixture(scope="module", params=EVAL_FILES)
def eval_set(request) -> dict:
    return load_fixture(request.param)


def _run(data: dict, run: dict, **overrides) -> dict:
    kwargs = dict(
        embeddings=data["embeddings"],
        labels=data["labels"],
        types=data["types"],
        views=data["views"],
        metric=run["metric"],
        cross_view_gallery=run["cross_view_gallery"],
    )
    kwargs.update(overrides)
    return evaluate(data["dataset"], **kwargs)


def _assert_result_close(res: dict, ref: dict) -> None:
    """``ref`` is OpenGait's result dict; ``evaluate`` drops the ``scalar/test_accuracy/`` prefix."""
    assert {k.removeprefix(PREFIX) for k in ref} == {k for k, v in res.items() if isinstance(v, float)}
    for k, v in ref.items():
        tol = ATOL_MAP_RESULT if "mAP" in k else ATOL_ACC
        assert abs(res[k.removeprefix(PREFIX)] - v) <= tol, (k, res[k.removeprefix(PREFIX)], v)


# ---------------------------------------------------------------- distance and compute_ACC_mAP (eval_metric_fns.pt)


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("metric", ["euc", "cos"])
def test_pairwise_distance_matches_cuda_dist(metric: str, chunk: int | None) -> None:
    ref = load_fixture("eval_metric_fns.pt")["cuda_dist"]
    x, y, expected = ref["x"], ref["y"], ref[metric]
    got = pairwise_distance(x.numpy(), y, metric=metric, chunk=chunk)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    identical = (x[:, None] == y[None]).flatten(2).all(-1)  # float32 cancellation: ~1e-3 instead of 0 (§1)
    assert identical.any()
    assert torch.allclose(got[~identical], expected[~identical], rtol=1e-5, atol=1e-5)
    assert torch.allclose(got[identical], expected[identical], rtol=0, atol=2e-3)


def test_pairwise_distance_rejects_bad_input() -> None:
    x = torch.randn(3, 4, 2)
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(x, x, metric="l1")
    with pytest.raises(ValueError, match=r"\[C, P\]"):
        pairwise_distance(x, torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match=r"\[N, C, P\]"):
        pairwise_distance(x.flatten(1), x)


@pytest.mark.parametrize("with_views", [True, False])
def test_compute_acc_map(with_views: bool) -> None:
    ref = load_fixture("eval_metric_fns.pt")["compute_ACC_mAP"]
    views = (ref["q_views"], ref["g_views"]) if with_views else ()
    acc, m_ap = compute_acc_map(ref["distmat"], ref["q_pids"], ref["g_pids"], *views)
    suffix = "with_views" if with_views else "no_views"
    assert acc == pytest.approx(ref[f"ACC_{suffix}"], abs=ATOL_ACC)
    assert m_ap == pytest.approx(ref[f"mAP_{suffix}"], abs=ATOL_MAP_RAW)


def _sorted_acc_map(dist: np.ndarray, q: np.ndarray, g: np.ndarray, qv: np.ndarray, gv: np.ndarray):
    """§2.2 steps 2-3 written out literally: remove, sort, match vector, cumulative precision."""
    hits, aps = [], []
    for i in range(len(q)):
        keep = ~((g == q[i]) & (gv == qv[i]))
        m = (g[keep] == q[i])[np.argsort(dist[i, keep])]
        hits.append(m[0])
        if m.sum():
            aps.append((np.cumsum(m) / np.arange(1, len(m) + 1) * m).sum() / m.sum())
    return np.mean(hits), np.mean(aps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_acc_map_matches_a_literal_sort(seed: int) -> None:
    """The sort-free ranks equal a literal sort (continuous distances: no ties), some queries without matches."""
    rng = np.random.default_rng(seed)
    nq, ng = 37, 53
    q, g = rng.integers(0, 9, nq), rng.integers(0, 8, ng)  # label 8 has no gallery item
    qv, gv = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    acc, m_ap = compute_acc_map(dist, q, g, qv, gv)
    ref_acc, ref_map = _sorted_acc_map(dist, q, g, qv, gv)
    assert acc == pytest.approx(ref_acc, abs=1e-12) and m_ap == pytest.approx(ref_map, abs=1e-12)


def test_compute_acc_map_no_gallery_left_raises() -> None:
    with pytest.raises(ValueError, match="no gallery left"):
        compute_acc_map(torch.rand(1, 2), [7], [7, 7], [0], [0, 0])


# ---------------------------------------------------------------- protocols (eval_casiab.pt, eval_oumvlp.pt)


def test_all_fixture_runs(eval_set: dict) -> None:
    assert eval_set["runs"]
    for name, run in eval_set["runs"].items():
        res = _run(eval_set, run)
        assert res["view_list"] == run["view_list"] and res["type_order"] == run["type_order"], name
        _assert_result_close(res, run["result"])
        if run["cross_view_gallery"]:
            for key, atol in [
                ("acc_raw", ATOL_ACC),
                ("acc_per_view", ATOL_ACC),
                ("map_raw", ATOL_MAP_RAW),
                ("map_per_view", ATOL_MAP_ROUNDED),
            ]:
                assert res[key].dtype == np.float64
                np.testing.assert_allclose(res[key], run[key].numpy(), rtol=0, atol=atol, err_msg=f"{name} {key}")
        else:
            assert res["acc"].dtype == np.float64 and res["per_view"].dtype == np.float64
            np.testing.assert_allclose(res["acc"], run["acc"].numpy(), rtol=0, atol=ATOL_ACC, err_msg=name)
            np.testing.assert_allclose(
                res["per_view"], run["per_view_excl_identical"].numpy(), rtol=0, atol=ATOL_ACC, err_msg=name
            )


def test_input_order_does_not_matter(eval_set: dict) -> None:
    perm = torch.randperm(len(eval_set["labels"]), generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = {**eval_set, "embeddings": eval_set["embeddings"][perm].numpy()}
    for key in ("labels", "types", "views"):
        shuffled[key] = [eval_set[key][i] for i in perm]
    for run in eval_set["runs"].values():
        _assert_result_close(_run(shuffled, run), run["result"])


def test_chunked_blocks_match(eval_set: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = {name: _run(eval_set, run) for name, run in eval_set["runs"].items()}
    # A small block budget forces several probe chunks per protocol (the path large test sets take).
    monkeypatch.setattr(indoor, "_BLOCK_ELEMENTS", 64 * len(eval_set["labels"]))
    monkeypatch.setattr(indoor, "_MIN_BLOCK_ROWS", 1)
    calls: list[int] = []
    original = GalleryDistances.__call__

    def spy(self, queries, out=None, index=None):
        calls.append(len(index))
        return original(self, queries, out=out, index=index)

    monkeypatch.setattr(GalleryDistances, "__call__", spy)
    for name, run in eval_set["runs"].items():
        calls.clear()
        chunked = _run(eval_set, run)
        assert len(calls) > 1, name
        for key, value in whole[name].items():
            if isinstance(value, np.ndarray):
                np.testing.assert_allclose(chunked[key], value, rtol=0, atol=1e-12, err_msg=f"{name} {key}")
            else:
                assert chunked[key] == value, (name, key)


def test_cmc_starts_at_rank1_and_rises(eval_set: dict) -> None:
    for name, run in eval_set["runs"].items():
        res = _run(eval_set, run, cmc_ranks=6)
        cmc, names = res["cmc"], res["type_order"]
        assert cmc.shape[0] == len(names) and 1 <= cmc.shape[1] <= 6, name  # 6, or less when the gallery is smaller
        assert (np.diff(cmc, axis=1) >= 0).all() and (cmc <= 100).all(), name
        key = "{}-Rank@1" if run["cross_view_gallery"] else "{}@R1"
        for i, t in enumerate(names):  # rank-1 cells are rounded to 0.01 before averaging, the CMC is not
            assert abs(cmc[i, 0] - res[key.format(t)]) <= 0.005 + 1e-9, (name, t)


def test_single_view_cmc_matches_a_literal_sort() -> None:
    """Tiny CASIA-B-named set: each cell's rank-k accuracy from sorting every (probe, gallery view) row."""
    rng = np.random.default_rng(0)
    types = ["nm-01", "nm-02", "nm-05", "bg-01"]
    grid = [(f"{i:03d}", t, v) for i in range(5) for t in types for v in ("000", "090", "180")]
    labels, typs, views = (np.array(c) for c in zip(*grid))
    emb = torch.as_tensor(rng.standard_normal((len(grid), 4, 2)), dtype=torch.float32)
    res = evaluate("casia_b", emb, labels, typs, views, cmc_ranks=4)
    dist = pairwise_distance(emb, emb).numpy()
    for ci, (cond, members) in enumerate([("NM", ("nm-05",)), ("BG", ("bg-01",))]):
        curves = []
        for v1 in ("000", "090", "180"):
            cells = []
            for v2 in ("000", "090", "180"):
                if v1 == v2:
                    continue
                probes = np.flatnonzero(np.isin(typs, members) & (views == v1))
                gallery = np.flatnonzero(np.isin(typs, ["nm-01", "nm-02"]) & (views == v2))
                order = np.argsort(dist[np.ix_(probes, gallery)], axis=1)
                first = (labels[gallery][order] == labels[probes][:, None]).argmax(1) + 1
                cells.append([(first <= k).mean() * 100 for k in range(1, 5)])
            curves.append(np.mean(cells, 0))
        np.testing.assert_allclose(res["cmc"][ci], np.mean(curves, 0), atol=1e-9, err_msg=cond)
    assert "cmc" not in evaluate("casia_b", emb, labels, typs, views)


def _drop(data: dict, keep: np.ndarray) -> dict:
    out = {**data, "embeddings": data["embeddings"][torch.as_tensor(keep)]}
    for key in ("labels", "types", "views"):
        out[key] = [data[key][i] for i in np.flatnonzero(keep)]
    return out


def test_empty_gallery_view_raises(eval_set: dict) -> None:
    spec = indoor.SINGLE_VIEW[canonical_protocol(eval_set["dataset"])]
    view = sorted(set(eval_set["views"]))[-1]
    gallery_at_view = np.isin(eval_set["types"], spec.gallery_types) & (np.asarray(eval_set["views"]) == view)
    data = _drop(eval_set, ~gallery_at_view)
    run = eval_set["runs"]["euc_single_view"]
    with pytest.raises(ValueError, match=f"gallery view.*{view}.*condition {next(iter(spec.probe_types))}"):
        _run(data, run)


def test_empty_probe_view_gives_nan_row(eval_set: dict) -> None:
    """§2.1: a probe view without probes gives NaN cells in that row, and NaN propagates to the result."""
    spec = indoor.SINGLE_VIEW[canonical_protocol(eval_set["dataset"])]
    cond, members = next(iter(spec.probe_types.items()))
    view_list = sorted(set(eval_set["views"]))
    probes_at_view = np.isin(eval_set["types"], members) & (np.asarray(eval_set["views"]) == view_list[0])
    res = _run(_drop(eval_set, ~probes_at_view), eval_set["runs"]["euc_single_view"])
    assert np.isnan(res["acc"][0, 0]).all() and not np.isnan(res["acc"][0, 1:]).any()
    assert np.isnan(res[f"{cond}@R1"])


def test_protocol_names_and_errors() -> None:
    data = load_fixture("eval_oumvlp.pt")
    args = (data["embeddings"], data["labels"], data["types"], data["views"])
    ref = data["runs"]["euc_single_view"]["result"]
    for alias in ("OUMVLP", "oumvlp", "OU-MVLP", data["dataset"]):
        _assert_result_close(evaluate(alias, *args), ref)
    assert canonical_protocol("CASIA-B") == canonical_protocol("casia_b") == "casia_b"
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        evaluate("grew", *args)
    with pytest.raises(ValueError, match="probe_set"):
        evaluate("Gait3D", *args)
    with pytest.raises(ValueError, match="lengths"):
        evaluate("oumvlp", data["embeddings"], data["labels"][:-1], data["types"], data["views"])
    with pytest.raises(ValueError, match="metric"):
        evaluate("oumvlp", *args, metric="manhattan")


# ---------------------------------------------------------------- EmbeddingCollector


def _padded_shards(n: int, world: int, seed: int) -> list[torch.Tensor]:
    """DistributedSampler(shuffle=True) style: shuffle, pad by repeating the head, deal rank-strided."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    total = -(-n // world) * world
    order = torch.cat([order, order[: total - n]])
    return [order[r::world] for r in range(world)]


def _feed(metric: EmbeddingCollector, table: torch.Tensor, index: torch.Tensor, batch: int) -> None:
    for s in range(0, len(index), batch):
        metric.update(table[index[s : s + batch]], index[s : s + batch])


@pytest.mark.filterwarnings("ignore:The ``compute`` method.*before the ``update``")  # torchmetrics' own warning
def test_collector_deduplicates_and_sorts() -> None:
    table = torch.randn(13, 5, 3)
    shard = torch.cat(_padded_shards(len(table), 3, seed=0))  # every index at least once, some twice, shuffled
    assert len(shard) > len(table)
    collector = EmbeddingCollector()
    _feed(collector, table, shard, batch=4)
    emb, idx = collector.compute()
    assert torch.equal(idx, torch.arange(len(table))) and idx.dtype == torch.long
    assert emb.dtype == torch.float32 and torch.equal(emb, table)
    collector.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        collector.compute()
    _feed(collector, table, torch.tensor([4, 2, 4]), batch=2)
    emb, idx = collector.compute()
    assert idx.tolist() == [2, 4] and torch.equal(emb, table[[2, 4]])


def test_collector_rejects_bad_batches() -> None:
    collector = EmbeddingCollector()
    with pytest.raises(ValueError, match=r"\[B, C, P\]"):
        collector.update(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="index"):
        collector.update(torch.randn(2, 3, 4), torch.tensor([0.0, 1.0]))
    collector.update(torch.randn(2, 3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="changed"):
        collector.update(torch.randn(2, 3, 5), torch.tensor([2, 3]))


def test_collector_sync_emulated_two_ranks() -> None:
    """torchmetrics' own sync path (list-state pre-concat + cat reduction) with an in-process fake all_gather."""
    table = torch.randn(11, 4, 2)
    shards = _padded_shards(len(table), 2, seed=3)
    rank_states: list[dict[int, torch.Tensor]] = []  # per rank: state keyed by ndim (3: embeddings, 1: index)

    def all_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [state[tensor.dim()] for state in rank_states]

    ranks = [EmbeddingCollector(dist_sync_fn=all_gather, distributed_available_fn=lambda: True) for _ in shards]
    for collector, shard in zip(ranks, shards):
        _feed(collector, table, shard, batch=3)
        rank_states.append({3: torch.cat(collector.embeddings), 1: torch.cat(collector.index)})
    for collector in ranks:
        emb, idx = collector.compute()
        assert torch.equal(idx, torch.arange(len(table))) and torch.equal(emb, table)
        assert sum(len(i) for i in collector.index) < len(table)  # unsynced again: local state only


def _ddp_worker(rank: int, world: int, store: str, table: torch.Tensor, shards: list, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        collector = EmbeddingCollector()
        _feed(collector, table, shards[rank], batch=3)
        torch.save(collector.compute(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned gloo processes: ~10 s on a shared 2-core machine
def test_collector_ddp_gather_matches_single_process(tmp_path) -> None:
    table, world = torch.randn(11, 4, 2), 2
    shards = _padded_shards(len(table), world, seed=3)
    out = str(tmp_path / "result")
    mp.start_processes(
        _ddp_worker, args=(world, str(tmp_path / "store"), table, shards, out), nprocs=world, start_method="spawn"
    )
    for rank in range(world):
        emb, idx = torch.load(f"{out}.{rank}", weights_only=True)
        assert torch.equal(idx, torch.arange(len(table))) and torch.equal(emb, table), rank


# ---------------------------------------------------------------- report


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_report_table_and_heatmap(tmp_path) -> None:
    data = load_fixture("eval_casiab.pt")
    runs = {run["cross_view_gallery"]: run for run in data["runs"].values() if run["metric"] == "euc"}
    single, cross = _run(data, runs[False]), _run(data, runs[True])

    text = _render(per_view_table(single, "single view"))
    assert "single view" in text and "mean" in text
    for t in single["type_order"]:
        assert t in text and f"{single[f'{t}@R1']:.2f}" in text
    assert all(v in text for v in single["view_list"])
    cross_text = _render(per_view_table(cross, "cross view"))
    assert all(f"{t} mAP" in cross_text and f"{cross[f'{t}-mAP']:.2f}" in cross_text for t in cross["type_order"])

    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_result(single, "printed", console=console)
    assert "printed" in console.file.getvalue()

    png = plot_per_view_heatmap(single, tmp_path / "plots" / "per_view.png")
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="single-view"):
        plot_per_view_heatmap(cross, tmp_path / "cross.png")
    with pytest.raises(ValueError, match="evaluate"):
        per_view_table({}, "empty")


@pytest.mark.parametrize("cross_view", [False, True])
def test_cmc_ranks_are_clipped_to_the_gallery(cross_view: bool) -> None:
    """Ranks past the gallery a probe is ranked against do not exist: single view, one gallery view (5 ids x nm-01..04);
    cross view, the gallery (5 ids x nm-02 / bg-02 / cl-02 x 3 views) less the probe's own (view, subject) entries.
    At that last rank every probe has found its match."""
    types = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "bg-01", "bg-02", "cl-01", "cl-02"]
    grid = [(f"{i:03d}", t, v) for i in range(5) for t in types for v in ("000", "090", "180")]
    labels, typs, views = (np.array(c) for c in zip(*grid))
    emb = torch.randn(len(grid), 4, 2, generator=torch.Generator().manual_seed(1))
    res = evaluate("casia_b", emb, labels, typs, views, cross_view_gallery=cross_view, cmc_ranks=500)
    gallery = 5 * 3 * 3 - 3 if cross_view else 5 * 4
    assert res["cmc"].shape == (3, gallery)
    np.testing.assert_allclose(res["cmc"][:, -1], 100.0)
