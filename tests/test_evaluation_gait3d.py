"""Gait3D protocol, k-reciprocal re-ranking and the unit metric functions against the OpenGait fixtures.

Tolerances follow fixtures README §6; every size and hyper-parameter is read from the fixture files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gaitkd.evaluation.gait3d as gait3d_mod
from conftest import load_fixture
from gaitkd.evaluation import (
    RESULT_PREFIX,
    evaluate,
    evaluate_many,
    evaluate_rank,
    mean_iou,
    re_ranking,
)

RANK_ATOL = 1e-4  # percent
CMC_ATOL = 1e-6  # fraction (= 1e-4 percent)
AP_ATOL = 5e-4
MAP_ATOL = 1e-2  # percent
RERANK_FLOAT_ATOL = 2.5  # percent: re-ranking from recomputed (not stored) distances, §6


@pytest.fixture(scope="module")
def g3d() -> dict:
    return load_fixture("eval_gait3d.pt")


@pytest.fixture(scope="module")
def fns() -> dict:
    return load_fixture("eval_metric_fns.pt")


def _args(data: dict) -> tuple:
    return data["embeddings"], data["labels"], data["types"], data["views"]


def _rerank_cfg(run: dict) -> dict:
    return {k: run[k] for k in ("k1", "k2", "lambda_value")}


def _assert_rank_lists(cmc, all_ap, all_inp, ref: dict) -> None:
    assert cmc.dtype == np.float32 and cmc.shape == tuple(ref["cmc"].shape)
    np.testing.assert_allclose(cmc, ref["cmc"].numpy(), rtol=0, atol=CMC_ATOL)
    np.testing.assert_allclose(all_ap, ref["all_AP"].numpy(), rtol=0, atol=AP_ATOL)
    np.testing.assert_allclose(all_inp, ref["all_INP"].numpy(), rtol=0, atol=AP_ATOL)


def _assert_results(res: dict, ref: dict, atol_rank: float = RANK_ATOL, atol_map: float = MAP_ATOL) -> None:
    assert ref, "fixture holds no result"
    for key, value in ref.items():
        name = key.removeprefix(RESULT_PREFIX)
        tol = atol_map if name in ("mAP", "mINP") else atol_rank
        assert isinstance(res[name], float)
        assert abs(res[name] - value) <= tol, (name, res[name], value)


def _expected_skipped(data: dict) -> int:
    mask = data["probe_mask"].numpy()
    labels = np.asarray(data["labels"])
    return int((~np.isin(labels[mask], labels[~mask])).sum())


# ---------------------------------------------------------------- Gait3D protocol (§2.3)


def test_gait3d_runs_match_opengait(g3d: dict) -> None:
    assert g3d["runs"]
    for name, run in g3d["runs"].items():
        res = evaluate(g3d["dataset"], *_args(g3d), metric=run["metric"], probe_set=g3d["probe_set"])
        _assert_results(res, run["result"])
        _assert_rank_lists(res["cmc"], res["all_AP"], res["all_INP"], run)
        assert res["n_valid"] == len(run["all_AP"]), name
        assert res["n_skipped"] == _expected_skipped(g3d) == int(g3d["probe_mask"].sum()) - res["n_valid"]


def test_gait3d_probe_set_defines_probes(g3d: dict) -> None:
    """Probe membership comes from the key strings, not from data order: a shuffled set gives the same numbers."""
    run = g3d["runs"]["euc"]
    perm = torch.randperm(len(g3d["labels"]), generator=torch.Generator().manual_seed(0))
    emb = g3d["embeddings"][perm]
    lab, typ, vie = ([x[i] for i in perm.tolist()] for x in (g3d["labels"], g3d["types"], g3d["views"]))
    res = evaluate("gait3d", emb, lab, typ, vie, metric=run["metric"], probe_set=list(reversed(g3d["probe_set"])))
    # AP/INP lists follow probe order, which the shuffle changes: compare the means only.
    _assert_results(res, run["result"])


def test_gait3d_chunked_ranking_is_identical(g3d: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    run = g3d["runs"]["cos"]
    full = evaluate("gait3d", *_args(g3d), metric=run["metric"], probe_set=g3d["probe_set"])
    monkeypatch.setattr(gait3d_mod, "_BLOCK_ELEMENTS", 1)  # one probe row per block
    chunked = evaluate("gait3d", *_args(g3d), metric=run["metric"], probe_set=g3d["probe_set"])
    for key in ("cmc", "all_AP", "all_INP"):
        np.testing.assert_array_equal(full[key], chunked[key])


def test_gait3d_errors(g3d: dict) -> None:
    with pytest.raises(ValueError, match="probe_set"):
        evaluate("gait3d", *_args(g3d))
    with pytest.raises(ValueError, match="probe"):
        evaluate("gait3d", *_args(g3d), probe_set=["no-such-key"])
    with pytest.raises(ValueError, match="rerank accepts"):
        evaluate("gait3d", *_args(g3d), probe_set=g3d["probe_set"], rerank={"k": 3})
    with pytest.raises(ValueError, match="only available for the gait3d"):
        evaluate("casia_b", *_args(g3d), rerank={"k1": 6, "k2": 6, "lambda_value": 0.3})


# ---------------------------------------------------------------- re-ranking (§2.4)


def test_re_ranking_unit_cases(fns: dict) -> None:
    case = fns["re_ranking"]
    assert case["cases"]
    for name, c in case["cases"].items():
        out = re_ranking(case["original_dist"], case["query_num"], **_rerank_cfg(c))
        assert out.dtype == np.float32 and out.shape == tuple(c["final_dist"].shape), name
        np.testing.assert_allclose(out, c["final_dist"].numpy(), rtol=0, atol=1e-6, err_msg=name)


def test_re_ranking_gait3d_from_stored_distances(g3d: dict) -> None:
    """Exact (float16-emulated) final distances, and the Gait3D metric on them (§2.4 + §2.3)."""
    mask = g3d["probe_mask"].numpy()
    labels = np.asarray(g3d["labels"])
    assert g3d["rerank"]
    for name, run in g3d["rerank"].items():
        out = re_ranking(run["original_dist"], run["query_num"], **_rerank_cfg(run))
        np.testing.assert_allclose(out, run["final_dist"].numpy(), rtol=0, atol=1e-6, err_msg=name)
        _assert_rank_lists(*evaluate_rank(out, labels[mask], labels[~mask]), run)


def test_gait3d_rerank_end_to_end(g3d: dict) -> None:
    """From embeddings: self-distances carry float32 noise, so float16 V may differ slightly (§6 float tolerance)."""
    for run in g3d["rerank"].values():
        res = evaluate(
            "Gait3D", *_args(g3d), metric=run["metric"], probe_set=g3d["probe_set"], rerank=_rerank_cfg(run)
        )
        _assert_results(res, run["result"], atol_rank=RERANK_FLOAT_ATOL, atol_map=RERANK_FLOAT_ATOL)
        assert res["n_valid"] == len(run["all_AP"])


def test_re_ranking_rejects_bad_input(fns: dict) -> None:
    od = fns["re_ranking"]["original_dist"]
    with pytest.raises(ValueError, match="square"):
        re_ranking(od[:-1], 2)
    with pytest.raises(ValueError, match="query_num"):
        re_ranking(od, 0)


# ---------------------------------------------------------------- unit metric functions (§2.5)


def test_evaluate_rank(fns: dict) -> None:
    assert fns["evaluate_rank"]
    for name, c in fns["evaluate_rank"].items():
        cmc, all_ap, all_inp = evaluate_rank(c["distmat"], c["p_lbls"], c["g_lbls"])
        assert len(cmc) == c["max_rank_used"], name
        _assert_rank_lists(cmc, all_ap, all_inp, c)


def test_evaluate_rank_errors(fns: dict) -> None:
    c = next(iter(fns["evaluate_rank"].values()))
    with pytest.raises(ValueError, match="distmat"):
        evaluate_rank(c["distmat"][:, :-1], c["p_lbls"], c["g_lbls"])
    absent = c["g_lbls"].max() + 1 + torch.arange(len(c["p_lbls"]))
    with pytest.raises(ValueError, match="no probe identity"):
        evaluate_rank(c["distmat"], absent, c["g_lbls"])


def test_evaluate_many(fns: dict) -> None:
    c = fns["evaluate_many"]
    cmc, m_ap, m_inp = evaluate_many(c["distmat"], c["q_pids"], c["g_pids"], c["q_camids"], c["g_camids"])
    np.testing.assert_allclose(cmc, c["cmc"].numpy(), rtol=0, atol=CMC_ATOL)
    assert abs(m_ap - c["mAP"]) <= AP_ATOL and abs(m_inp - c["mINP"]) <= AP_ATOL


def test_evaluate_many_without_shared_cameras_equals_evaluate_rank(fns: dict) -> None:
    c = fns["evaluate_many"]
    q_cam = torch.zeros(len(c["q_pids"]), dtype=torch.int64)
    cmc, m_ap, m_inp = evaluate_many(c["distmat"], c["q_pids"], c["g_pids"], q_cam, q_cam.new_ones(len(c["g_pids"])))
    ref_cmc, ref_ap, ref_inp = evaluate_rank(c["distmat"], c["q_pids"], c["g_pids"])
    np.testing.assert_array_equal(cmc, ref_cmc)
    assert m_ap == float(np.mean(ref_ap)) and m_inp == float(np.mean(ref_inp))


def test_mean_iou(fns: dict) -> None:
    c = fns["mean_iou"]
    out = mean_iou(c["msk1"], c["msk2"])
    assert out.dtype == torch.float32 and out.shape == c["miou"].shape
    torch.testing.assert_close(out, c["miou"], rtol=1e-6, atol=1e-7)
    self_iou = mean_iou(c["msk1"].numpy(), c["msk1"].numpy())
    torch.testing.assert_close(self_iou, (c["msk1"].flatten(1).sum(1) > 0).float())
    with pytest.raises(ValueError, match="mean_iou"):
        mean_iou(c["msk1"], c["msk2"][:-1])
