"""GaitSet / GaitGL against OpenGait's own outputs (fixtures ``models/<Model>.pt``) + config / weight loading."""

from __future__ import annotations

import copy
import functools
import re

import pytest
import torch

from conftest import FIXTURES, load_fixture
from gaitkd.models import (
    MODELS,
    GaitOutput,
    build_model,
    count_params,
    from_opengait,
    load_opengait_weights,
)
from gaitkd.models.blocks import seq_lengths, temporal_max
from gaitkd.models.gaitgl import GaitGL, GLConv

TOL = 1e-5
REQUIRED = {"GaitSet", "GaitGL"}  # other fixture models are future work
NAMES = sorted(REQUIRED | ({p.stem for p in (FIXTURES / "models").glob("*.pt")} & set(MODELS)))


@functools.cache
def _fixture(name: str) -> dict:
    return load_fixture(f"models/{name}.pt")


def _loaded(name: str) -> torch.nn.Module:
    d = _fixture(name)
    return load_opengait_weights(from_opengait(d["config"]), d["state_dict"])


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, (what, tuple(ours.shape), tuple(ref.shape))
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    # absolute 1e-5, and relative to the tensor's scale so that tiny logits are still checked meaningfully
    assert diff <= TOL and diff <= 1e-4 * scale + 1e-9, f"{what}: max abs diff {diff:.3g} (ref max {scale:.3g})"


def _check_outputs(out: GaitOutput, ref: dict, what: str) -> None:
    _close(out.embeddings, ref["inference_feat"]["embeddings"], f"{what} inference embeddings")
    _close(out.train_embeddings, ref["training_feat"]["triplet"]["embeddings"], f"{what} triplet embeddings")
    if "softmax" in ref["training_feat"]:
        _close(out.logits, ref["training_feat"]["softmax"]["logits"], f"{what} logits")
    else:
        assert out.logits is None


def _frame_size() -> tuple[int, int]:
    return tuple(_fixture("GaitGL")["input"]["sils"].shape[-2:])


def _lengths_for(total: int) -> list[int]:
    """Variable lengths derived from the fixture length: repeats (grouping), 1 and 2 frames (GaitGL tiling)."""
    half = max(total // 2, 1)
    return [total, 1, half, min(total, 2), half]


@pytest.mark.parametrize("name", NAMES)
def test_param_counts_and_names(name):
    d = _fixture(name)
    model = from_opengait(d["config"])
    counts = d["param_counts"]
    assert count_params(model) == counts["total"]
    for top, n in counts["by_top_module"].items():
        assert sum(p.numel() for k, p in model.named_parameters() if k.split(".")[0] == top) == n, top
    assert sum(b.numel() for b in model.buffers()) == counts["buffers"]
    assert set(model.state_dict()) == set(d["state_dict"])


@pytest.mark.parametrize("name", NAMES)
def test_init_reproduces_opengait_under_same_seed(name):
    d = _fixture(name)
    torch.manual_seed(d["seed"])
    model = from_opengait(d["config"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, d["state_dict"][key]), key


@pytest.mark.parametrize("name", NAMES)
def test_eval_outputs_match_opengait(name):
    d = _fixture(name)
    model = _loaded(name).eval()
    sils = d["input"]["sils"]
    with torch.no_grad():
        _check_outputs(model(sils), d["outputs"], "whole batch")
        # OpenGait's test loop: one sequence per forward, packed with seqL = [[T]]
        per_seq = [model(s[None], seqL=[[s.shape[0]]]) for s in sils]
    merged = GaitOutput(
        embeddings=torch.cat([o.embeddings for o in per_seq]),
        logits=None if per_seq[0].logits is None else torch.cat([o.logits for o in per_seq]),
        triplet_embeddings=None
        if per_seq[0].triplet_embeddings is None
        else torch.cat([o.triplet_embeddings for o in per_seq]),
    )
    _check_outputs(merged, d["outputs_test_format"], "test format")


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_outputs_match_opengait_and_backprop(name):
    d = _fixture(name)
    model = _loaded(name)
    trained = copy.deepcopy(model).train()  # train mode updates BN running stats: keep the loaded model intact
    out = trained(d["input"]["sils"])
    _check_outputs(out, d["outputs_train_mode"], "train mode")
    loss = out.train_embeddings.square().mean() + (0 if out.logits is None else out.logits.square().mean())
    loss.backward()
    grads = {k: p.grad for k, p in trained.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, d["state_dict"][key]), key


@pytest.mark.parametrize("name", NAMES)
def test_packed_variable_length_equals_separate_forwards(name):
    d = _fixture(name)
    model = _loaded(name).eval()
    lengths = _lengths_for(d["input"]["sils"].shape[1])
    frames = d["input"]["sils"][0]  # [T, H, W]
    seqs = [frames[:n].flip(0) if i % 2 else frames[:n] for i, n in enumerate(lengths)]  # distinct contents
    with torch.no_grad():
        packed = model(torch.cat(seqs)[None], seqL=torch.tensor(lengths))
        single = [model(s[None]) for s in seqs]
    assert packed.embeddings.shape[0] == len(lengths)
    _close(packed.embeddings, torch.cat([o.embeddings for o in single]), "packed embeddings")
    if packed.logits is not None:
        _close(packed.logits, torch.cat([o.logits for o in single]), "packed logits")


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_at_a_time_in_eval(name):
    d = _fixture(name)
    model = _loaded(name).eval()
    sils = torch.cat([d["input"]["sils"], d["input"]["sils"].flip(1)])  # more sequences than the fixture batch
    with torch.no_grad():
        batch = model(sils)
        single = torch.cat([model(s[None]).embeddings for s in sils])
    _close(batch.embeddings, single, "batch vs single")


def test_gaitgl_short_sequences_are_tiled_like_opengait():
    model = _loaded("GaitGL").eval()
    frames = _fixture("GaitGL")["input"]["sils"][0]
    with torch.no_grad():
        one = model(frames[:1][None]).embeddings
        _close(one, model(frames[:1].repeat(3, 1, 1)[None]).embeddings, "1 frame -> 3")
        two = model(frames[:2][None]).embeddings
        _close(two, model(frames[:2].repeat(2, 1, 1)[None]).embeddings, "2 frames -> 4")


def test_seq_lengths_formats_and_temporal_max():
    lengths = [3, 1, 4]
    forms = [lengths, torch.tensor(lengths), [lengths], torch.tensor([lengths], dtype=torch.int32)]
    assert all(seq_lengths(f) == lengths for f in forms)
    x = torch.randn(1, 5, sum(lengths), 2, 3)
    ref = torch.stack([s.amax(2)[0] for s in x.split(lengths, dim=2)])
    assert torch.equal(temporal_max(x, forms[-1]), ref)
    assert torch.equal(temporal_max(x), x.amax(2))
    with pytest.raises(ValueError, match="sum"):
        temporal_max(x, [3, 1])
    with pytest.raises(ValueError, match="positive"):
        seq_lengths([2, 0])


@pytest.mark.parametrize("name", NAMES)
def test_bad_packed_input_raises(name):
    model = build_model(name)
    with pytest.raises(ValueError, match="packed"):
        model(torch.rand(2, 4, 64, 44), seqL=[2, 2])


@pytest.mark.parametrize("name", NAMES)
def test_load_opengait_and_lightning_checkpoints(name, tmp_path):
    d = _fixture(name)
    ckpt = tmp_path / "opengait.pt"
    torch.save({"model": d["state_dict"], "optimizer": {}, "scheduler": {}, "iteration": 7}, ckpt)
    model = load_opengait_weights(from_opengait(d["config"]), ckpt)
    assert all(torch.equal(v, d["state_dict"][k]) for k, v in model.state_dict().items())
    lightning = {"state_dict": {f"student.{k}": v for k, v in d["state_dict"].items()}, "epoch": 1}
    lightning["state_dict"].update({f"teacher.{k}": v for k, v in d["state_dict"].items()})
    torch.save(lightning, tmp_path / "lightning.ckpt")
    model = load_opengait_weights(from_opengait(d["config"]), tmp_path / "lightning.ckpt")
    assert all(torch.equal(v, d["state_dict"][k]) for k, v in model.state_dict().items())


def test_load_mismatch_lists_every_problem(tmp_path):
    d = _fixture("GaitGL")
    state = dict(d["state_dict"])
    dropped = sorted(state)[0]
    del state[dropped]
    state["extra.weight"] = torch.zeros(1)
    resized = "Head1.fc_bin"
    state[resized] = torch.zeros(*state[resized].shape[:-1], state[resized].shape[-1] + 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_opengait_weights(from_opengait(d["config"]), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg and dropped in msg and "extra.weight" in msg and resized in msg
    with pytest.raises(ValueError, match="missing keys") as err:  # wrong architecture
        load_opengait_weights(from_opengait(d["config"]), _fixture("GaitSet")["state_dict"])
    assert "set_block1.forward_block.0.conv.weight" in str(err.value)


def test_non_finite_weights_are_rejected():
    d = _fixture("GaitSet")
    state = {k: v.clone() for k, v in d["state_dict"].items()}
    state["Head.fc_bin"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=re.escape("Head.fc_bin")):
        load_opengait_weights(from_opengait(d["config"]), state)


def test_from_opengait_rejects_unknown_model_and_keys():
    cfg = copy.deepcopy(_fixture("GaitSet")["config"])
    cfg["model_cfg"]["typo_key"] = 1
    with pytest.raises(ValueError, match="typo_key") as err:
        from_opengait(cfg)
    assert "in_channels" in str(err.value)  # names the known keys
    with pytest.raises(ValueError, match="NoSuchNet") as err:
        from_opengait({"model": "NoSuchNet"})
    assert "GaitSet" in str(err.value)
    with pytest.raises(ValueError, match="NoSuchNet"):
        build_model("NoSuchNet")


def test_gaitset_narrow_variant_from_model_cfg_only():
    model_cfg = copy.deepcopy(_fixture("GaitSet")["config"]["model_cfg"])
    narrow = [model_cfg["in_channels"][0]] + [max(c // 2, 1) for c in model_cfg["in_channels"][1:]]
    out_c = max(model_cfg["SeparateFCs"]["out_channels"] // 2, 1)
    model_cfg.update(in_channels=narrow, SeparateFCs={"in_channels": narrow[-1], "out_channels": out_c})
    model = from_opengait(model_cfg)
    out = model(torch.rand(2, 3, *_frame_size()))
    assert out.embeddings.shape == (2, out_c, 2 * sum(model_cfg["bin_num"])) and out.logits is None
    model_cfg["SeparateFCs"]["in_channels"] = narrow[-1] + 1
    with pytest.raises(ValueError, match="SeparateFCs.in_channels"):
        from_opengait(model_cfg)


def _gaitgl_cfg(channels: list[int], dataset: str, **extra) -> dict:
    cfg = copy.deepcopy(_fixture("GaitGL")["config"])
    cfg["data_cfg"]["dataset_name"] = dataset
    cfg["model_cfg"].update(channels=channels, **extra)
    return cfg


def test_gaitgl_branches_follow_dataset_name():
    d = _fixture("GaitGL")
    narrow = [max(c // 4, 1) for c in d["config"]["model_cfg"]["channels"]]
    classes = d["config"]["model_cfg"]["class_num"]
    shallow = from_opengait(_gaitgl_cfg(narrow, "CASIA-B"))
    deep = from_opengait(_gaitgl_cfg(narrow + [narrow[-1]], "OUMVLP"))
    assert "GLConvA0.global_conv3d.conv3d.weight" in shallow.state_dict()
    assert "GLConvA0.1.local_conv3d.conv3d.weight" in deep.state_dict()
    assert "conv3d.2.conv3d.weight" in deep.state_dict()
    for model in (shallow, deep):
        out = model.eval()(torch.rand(2, 3, *_frame_size()))
        assert out.embeddings.shape == (2, narrow[-1], 64) and out.logits.shape == (2, classes, 64)
    with pytest.raises(ValueError, match="channels"):
        from_opengait(_gaitgl_cfg(narrow, "GREW"))
    # model_cfg alone: CASIA-B branch unless a dataset name is given
    model_cfg = _gaitgl_cfg(narrow, "unused")["model_cfg"]
    assert "conv3d.2.conv3d.weight" not in from_opengait(model_cfg).state_dict()
    deep_cfg = dict(model_cfg, channels=narrow + [narrow[-1]])
    assert "conv3d.2.conv3d.weight" in from_opengait(deep_cfg, dataset_name="GREW").state_dict()


def test_gaitgl_bnneck_variant():
    narrow = [max(c // 4, 1) for c in _fixture("GaitGL")["config"]["model_cfg"]["channels"]]
    classes = 7
    necks = {"class_num": classes, "in_channels": narrow[-1], "parts_num": 64}
    model = from_opengait(_gaitgl_cfg(narrow, "CASIA-B", SeparateBNNecks=necks)).eval()
    assert "BNNecks.fc_bin" in model.state_dict() and "Bn.weight" not in model.state_dict()
    out = model(torch.rand(2, 3, *_frame_size()))
    assert out.logits.shape == (2, classes, 64) and out.logits.abs().max() <= 1 + 1e-6
    assert torch.allclose(out.embeddings.norm(dim=1), torch.ones(2, 64), atol=1e-5)
    assert out.triplet_embeddings is not None and not torch.allclose(out.triplet_embeddings, out.embeddings)


@pytest.mark.parametrize("height", [16, 20])  # equal strips (folded into the batch) and a ragged last strip
def test_glconv_local_strips_match_strip_by_strip(height):
    torch.manual_seed(0)
    conv = GLConv(2, 3, halving=3)
    x = torch.randn(2, 2, 3, height, 5)
    strips = x.split(height // 8, 3)
    local = torch.cat([conv.local_conv3d(z) for z in strips], 3)
    ref = torch.nn.functional.leaky_relu(conv.global_conv3d(x)) + torch.nn.functional.leaky_relu(local)
    assert len(strips) == (8 if height % 8 == 0 else 10)
    torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-6)


def test_from_opengait_accepts_omegaconf():
    omegaconf = pytest.importorskip("omegaconf")
    d = _fixture("GaitSet")
    model = from_opengait(omegaconf.OmegaConf.create(d["config"]))
    assert count_params(model) == d["param_counts"]["total"]


def test_gaitgl_out_channels_widens_only_the_head():
    """``out_channels`` sets Head0's part width (the study's thin GaitGL keeps OpenGait's 64 x 128 output); unset, the
    model is OpenGait's (width = channels[-1], same parameters)."""
    torch.manual_seed(0)
    wide = GaitGL(channels=(16, 32, 64), class_num=7, out_channels=128).eval()
    out = wide(torch.rand(2, 6, 64, 44))
    assert out.embeddings.shape == (2, 128, 64) and out.logits.shape == (2, 7, 64)
    plain = GaitGL(channels=(16, 32, 64), class_num=7)
    same = GaitGL(channels=(16, 32, 64), class_num=7, out_channels=64)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}
    assert wide.Head0.fc_bin.shape[1:] == (64, 128)
