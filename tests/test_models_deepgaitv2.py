"""DeepGaitV2 variants (``mode: 2d | p3d | 3d``, deeper layouts, ``use_emb2``) and its OpenGait config translator.

The fixture model itself (P3D, CASIA-B config) is checked against OpenGait by ``test_models.py``; here narrow
variants built from the fixture's ``model_cfg`` keep every test fast.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch

from conftest import load_fixture
from gaitkd.models import DeepGaitV2, from_opengait, load_opengait_weights
from gaitkd.models.blocks import map_length_groups

CONF = Path(__file__).resolve().parents[1] / "conf"


@functools.cache
def _fixture() -> dict:
    return load_fixture("models/DeepGaitV2.pt")


def _cfg(mode: str | None = None, layers: list[int] | None = None, **extra) -> dict:
    """The fixture's model_cfg, 16x narrower, optionally with another mode / layout / extra top-level keys."""
    cfg = copy.deepcopy(_fixture()["config"]["model_cfg"])
    backbone = cfg["Backbone"]
    backbone["channels"] = [max(c // 16, 2) for c in backbone["channels"]]
    if mode is not None:
        backbone["mode"] = mode
    if layers is not None:
        backbone["layers"] = layers
    cfg.update(extra)
    return cfg


def _sils(n: int, t: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, t, *_fixture()["input"]["sils"].shape[-2:])


def _randomise_bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics so that eval-mode BN is not an identity."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize(
    ("mode", "key", "ndim"),
    [
        ("2d", "layer2.forward_block.0.conv1.weight", 4),  # 2d: layers 2-4 wrapped frame-wise, 2-D downsample
        ("p3d", "layer2.0.shortcut3d.weight", 5),
        ("3d", "layer2.0.conv1.weight", 5),  # 3x3x3 convs
    ],
)
def test_modes_build_opengait_names_and_run(mode, key, ndim):
    cfg = _cfg(mode)
    model = from_opengait(cfg).eval()
    state = model.state_dict()
    assert key in state and state[key].dim() == ndim
    assert "layer1.forward_block.0.conv1.weight" in state  # layer1 is frame-wise in every mode
    ds = "layer2.forward_block.0.downsample.0.weight" if mode == "2d" else "layer2.0.downsample.0.weight"
    assert state[ds].dim() == ndim
    channels, classes = cfg["Backbone"]["channels"], cfg["SeparateBNNecks"]["class_num"]
    out = model(_sils(2, 3))
    assert out.embeddings.shape == (2, channels[2], 16) and out.logits.shape == (2, classes, 16)
    assert out.logits.abs().max() <= 1 + 1e-6 and out.triplet_embeddings is None


def test_gait3d_layout_blocks_and_class_count():
    layers = [1, 4, 4, 1]  # OpenGait DeepGaitV2_gait3d.yaml (GaitKD's teacher)
    cfg = _cfg("p3d", layers, SeparateBNNecks={"class_num": 3000})
    model = from_opengait(cfg).eval()
    for i, n in enumerate(layers[1:], start=2):
        assert len(getattr(model, f"layer{i}")) == n
    state = model.state_dict()
    # only the first block of a stage projects; the others are plain residual blocks
    assert "layer3.0.downsample.0.weight" in state and not any(k.startswith("layer3.1.downsample") for k in state)
    assert state["BNNecks.fc_bin"].shape[-1] == 3000
    assert model(_sils(1, 2)).logits.shape == (1, 3000, 16)


@pytest.mark.parametrize("mode", ["2d", "3d"])  # p3d (the fixture model) is covered by test_models.py
def test_packed_variable_length_equals_separate_forwards(mode):
    model = _randomise_bn_stats(from_opengait(_cfg(mode)))
    lengths = [3, 1, 3, 2]
    frames = _sils(1, sum(lengths))[0]
    seqs = list(frames.split(lengths))
    with torch.no_grad():
        packed = model(frames[None], seqL=[lengths])
        single = torch.cat([model(s[None]).embeddings for s in seqs])
    torch.testing.assert_close(packed.embeddings, single, rtol=1e-5, atol=1e-6)


def test_use_emb2_evaluates_the_bnneck_feature():
    d = _fixture()
    base = from_opengait(_cfg())
    emb2 = from_opengait(_cfg(use_emb2=True))
    emb2.load_state_dict(_randomise_bn_stats(base).state_dict())
    emb2.eval()
    sils = _sils(2, 3)
    with torch.no_grad():
        ref, out = base(sils), emb2(sils)
        bnft, logits = emb2.BNNecks(ref.embeddings)
    torch.testing.assert_close(out.triplet_embeddings, ref.embeddings)  # triplet stays on embed_1
    torch.testing.assert_close(out.train_embeddings, ref.embeddings)
    torch.testing.assert_close(out.embeddings, bnft)
    torch.testing.assert_close(out.logits, logits)
    assert not torch.allclose(out.embeddings, ref.embeddings)
    torch.testing.assert_close(out.embeddings.norm(dim=1), torch.ones(2, 16))
    # the flag does not change the parameters: OpenGait checkpoints load either way
    load_opengait_weights(from_opengait(dict(d["config"]["model_cfg"], use_emb2=True)), d["state_dict"])


def test_multichannel_input_is_n_t_c_h_w():
    cfg = _cfg()
    cfg["Backbone"]["in_channels"] = 3
    model = from_opengait(cfg).eval()
    sils = _sils(2, 3)
    out = model(torch.stack([sils] * 3, dim=2))
    assert out.embeddings.shape[0] == 2
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\]"):
        model(sils)


def test_bad_frame_size_raises_clearly():
    model = from_opengait(_cfg()).eval()
    with pytest.raises(ValueError, match="16 strips"):
        model(torch.rand(1, 2, 20, 44))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(typo_key=1), "typo_key"),
        (lambda c: c["Backbone"].update(stride=2), "stride"),
        (lambda c: c["Backbone"].update(mode="4d"), "4d"),
        (lambda c: c["SeparateBNNecks"].update(parts_num=8), "parts_num"),
        (lambda c: c["SeparateBNNecks"].update(norm=False), "norm"),
        (lambda c: c["Backbone"].pop("layers"), "layers"),
        (lambda c: c["Backbone"].update(layers=[1, 1, 1]), "layers"),
    ],
)
def test_translator_rejects_bad_model_cfg(edit, match):
    cfg = _cfg()
    edit(cfg)
    with pytest.raises(ValueError, match=match):
        from_opengait(cfg)


def test_translator_accepts_consistent_implied_bnneck_keys():
    cfg = _cfg()
    cfg["SeparateBNNecks"].update(in_channels=cfg["Backbone"]["channels"][2], parts_num=16)
    assert isinstance(from_opengait(cfg), DeepGaitV2)


def test_map_length_groups_restores_input_order():
    lengths = [2, 3, 2, 1]
    packed = torch.arange(sum(lengths), dtype=torch.float32)[None, :, None]  # [1, T, 1]
    sums = map_length_groups(lambda g: g.sum(1), packed, lengths)  # [N, 1]
    ref = torch.stack([s.sum(0) for s in packed[0].split(lengths)])
    assert torch.equal(sums, ref)


@pytest.mark.parametrize("group", ["student", "teacher"])
def test_hydra_configs_build_deepgaitv2(group):
    omegaconf = pytest.importorskip("omegaconf")
    from hydra.utils import instantiate

    node = omegaconf.OmegaConf.load(CONF / group / "deepgaitv2.yaml")
    assert node.logit_scale == 16
    kwargs = omegaconf.OmegaConf.to_container(node.model)
    assert kwargs.pop("_target_") == "gaitkd.models.DeepGaitV2" and kwargs["class_num"] is None
    narrow = dict(kwargs, class_num=5, channels=[max(c // 16, 2) for c in kwargs["channels"]])
    model = instantiate({"_target_": "gaitkd.models.DeepGaitV2", **narrow})
    assert isinstance(model, DeepGaitV2) and model.BNNecks.class_num == 5
