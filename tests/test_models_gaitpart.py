"""GaitPart-specific checks: focal convs, the grouped / masked TFA against a per-part per-sequence reference, the
wider OU-MVLP / GREW backbone layout and the ``model_cfg`` translator. (Fixture equality is in ``test_models.py``.)"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from conftest import load_fixture
from gaitkd.models import GaitPart, count_params, from_opengait
from gaitkd.models.gaitpart import FocalConv2d, TemporalFeatureAggregator, parse_layer


@functools.cache
def _fixture() -> dict:
    return load_fixture("models/GaitPart.pt")


def _model_cfg() -> dict:
    return copy.deepcopy(_fixture()["config"]["model_cfg"])


def _frame_size() -> tuple[int, int]:
    return tuple(_fixture()["input"]["sils"].shape[-2:])


@pytest.mark.parametrize("height", [16, 20])  # equal strips (folded into the batch) and a ragged last strip
def test_focal_conv_matches_strip_by_strip(height):
    torch.manual_seed(0)
    conv = FocalConv2d(2, 3, 3, halving=3, stride=1, padding=1)
    x = torch.randn(2, 2, height, 5)
    strips = x.split(height // 8, 2)
    assert len(strips) == (8 if height % 8 == 0 else 10)
    torch.testing.assert_close(conv(x), torch.cat([conv.conv(z) for z in strips], 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="strips"):
        conv(torch.randn(1, 2, 4, 5))


def _reference_tfa(tfa: TemporalFeatureAggregator, x: torch.Tensor) -> torch.Tensor:
    """One sequence ``[1, c, s, P]`` through the per-part conv stacks with zero / -inf padded pools -> ``[1, c, P]``."""
    pools = [(nn.AvgPool1d(3, 1, 1), nn.MaxPool1d(3, 1, 1)), (nn.AvgPool1d(5, 1, 2), nn.MaxPool1d(5, 1, 2))]
    parts = []
    for i in range(x.shape[-1]):
        z = x[..., i]  # [1, c, s]
        out = 0
        for branch, (avg, mx) in zip((tfa.conv1d3x1, tfa.conv1d3x3), pools):
            out = out + (avg(z) + mx(z)) * torch.sigmoid(branch[i](z))
        parts.append(out.max(-1).values)
    return torch.stack(parts, -1)


def test_tfa_grouped_and_packed_match_per_part_reference():
    torch.manual_seed(0)
    channels, parts = 8, 3
    tfa = TemporalFeatureAggregator(channels, parts)
    lengths = [5, 1, 2, 4]  # sequences shorter than both pooling windows included
    seqs = [torch.randn(1, channels, n, parts) for n in lengths]
    ref = torch.cat([_reference_tfa(tfa, s) for s in seqs])
    single = torch.cat([tfa(s) for s in seqs])
    torch.testing.assert_close(single, ref, rtol=1e-5, atol=1e-6)
    # right-padded batch, last frame repeated (the TFA's padding contract): convs / averages must mask it out
    padded = torch.stack([torch.cat([s[0]] + [s[0, :, -1:]] * (max(lengths) - s.shape[2]), 1) for s in seqs])
    valid = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    torch.testing.assert_close(tfa(padded, valid), ref, rtol=1e-5, atol=1e-6)


def test_packed_train_mode_gradients_are_finite():
    model = from_opengait(_fixture()["config"]).train()
    frames = _fixture()["input"]["sils"][0]
    lengths = [frames.shape[0], 1, 2]
    out = model(torch.cat([frames[:n] for n in lengths])[None], seqL=lengths)
    out.embeddings.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.TFA.pooling_func.conv1d3x3[0][2].conv.weight.grad.abs().sum() > 0


def _wide_cfg(divisor: int = 8) -> dict:
    """OU-MVLP / GREW layout (BC second stage, two extra wider focal convs), narrowed by ``divisor``."""
    base = [parse_layer(t)[1] for t in _model_cfg()["backbone_cfg"]["layers_cfg"] if t != "M"]
    c1, c2, c3 = (max(c // divisor, 4) for c in (base[0], base[2], base[-1]))
    c4 = 2 * c3
    cfg = _model_cfg()
    cfg["backbone_cfg"]["layers_cfg"] = [
        f"BC-{c1}", f"BC-{c1}", "M", f"BC-{c2}", f"BC-{c2}", "M",
        f"FC-{c3}-3", f"FC-{c3}-3", f"FC-{c4}-3", f"FC-{c4}-3",
    ]
    cfg["SeparateFCs"].update(in_channels=c4, out_channels=c4)
    return cfg


def test_wide_oumvlp_layout_builds_with_expected_params():
    cfg = _wide_cfg()
    model = from_opengait(cfg)
    layers = cfg["backbone_cfg"]["layers_cfg"]
    convs = [parse_layer(t) for t in layers if t != "M"]
    channels = [1] + [c for _, c, _ in convs]
    kernels = [5] + [3] * (len(convs) - 1)
    backbone = sum(a * b * k * k for a, b, k in zip(channels, channels[1:], kernels))
    c, parts, out_c = channels[-1], sum(cfg["bin_num"]), cfg["SeparateFCs"]["out_channels"]
    hidden = c // 4
    tfa = parts * (c * hidden * 3 + hidden * c * 1 + c * hidden * 3 + hidden * c * 3)
    by_top = {
        top: sum(p.numel() for k, p in model.named_parameters() if k.split(".")[0] == top)
        for top in ("Backbone", "TFA", "Head")
    }
    assert by_top == {"Backbone": backbone, "TFA": tfa, "Head": parts * c * out_c}
    assert count_params(model) == backbone + tfa + parts * c * out_c
    last = f"Backbone.forward_block.feature.{len(layers) + len(convs) - 2}.conv.weight"  # convs and LReLUs interleave
    assert last in model.state_dict()
    out = model.eval()(torch.rand(2, 3, *_frame_size()))
    assert out.embeddings.shape == (2, out_c, parts) and out.logits is None


def test_model_cfg_translator_rejects_bad_configs():
    good = _model_cfg()
    assert isinstance(from_opengait(good), GaitPart)
    cases = [
        (("backbone_cfg", "typo_key"), 1, "typo_key"),
        (("backbone_cfg", "type"), "ResNet9", "Plain"),
        (("backbone_cfg", "layers_cfg"), ["BC-8", "XC-8"], "XC-8"),
        (("backbone_cfg", "layers_cfg"), ["M", f"BC-{good['SeparateFCs']['in_channels']}"], "start with a conv"),
        (("SeparateFCs", "in_channels"), good["SeparateFCs"]["in_channels"] + 1, "SeparateFCs.in_channels"),
        (("SeparateFCs", "parts_num"), sum(good["bin_num"]) + 1, "SeparateFCs.parts_num"),
        (("unknown_top",), 1, "unknown_top"),
    ]
    for path, value, message in cases:
        cfg = _model_cfg()
        target = cfg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(ValueError, match=message):
            from_opengait(cfg)
    with pytest.raises(ValueError, match="one-channel"):
        GaitPart(in_channels=3)


@pytest.mark.parametrize("group", ["student", "teacher"])
def test_hydra_configs_build_the_opengait_casia_b_model(group):
    omegaconf = pytest.importorskip("omegaconf")
    from gaitkd.run import CONF_DIR, build_model

    node = omegaconf.OmegaConf.load(CONF_DIR / group / "gaitpart.yaml").model
    torch.manual_seed(_fixture()["seed"])
    model = build_model(node, num_classes=1)
    assert isinstance(model, GaitPart)
    state = model.state_dict()
    assert set(state) == set(_fixture()["state_dict"])
    assert all(torch.equal(v, _fixture()["state_dict"][k]) for k, v in state.items())
