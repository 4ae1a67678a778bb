"""GaitBase (OpenGait ``Baseline``): config variants (OU-MVLP / Gait3D heads, backbone layouts), config validation,
the ``GaitBase`` alias and the Hydra configs. Fixture-exact outputs are checked by ``test_models.py``."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import load_fixture
from gaitkd.models import MODELS, GaitBase, build_model, from_opengait
from gaitkd.run import CONF_DIR
from gaitkd.run import build_model as build_from_node


@functools.cache
def _fixture() -> dict:
    return load_fixture("models/Baseline.pt")


def _narrow_cfg(div: int = 8, **necks) -> dict:
    """The fixture's whole config with every width divided by ``div`` (fast), BNNeck entries overridden."""
    cfg = copy.deepcopy(_fixture()["config"])
    mc = cfg["model_cfg"]
    mc["backbone_cfg"]["channels"] = [max(c // div, 1) for c in mc["backbone_cfg"]["channels"]]
    out = max(mc["SeparateFCs"]["out_channels"] // div, 1)
    mc["SeparateFCs"].update(in_channels=mc["backbone_cfg"]["channels"][-1], out_channels=out)
    mc["SeparateBNNecks"].update(in_channels=out, **necks)
    return cfg


def _sils(n: int = 2, t: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, t, *_fixture()["input"]["sils"].shape[-2:])


@pytest.mark.parametrize("dataset", ["CASIA-B", "OUMVLP", "Gait3D"])
def test_dataset_variants_change_only_the_class_count(dataset):
    classes = 2 * _fixture()["config"]["model_cfg"]["SeparateBNNecks"]["class_num"] + 3  # e.g. OU-MVLP's 5153
    cfg = _narrow_cfg(class_num=classes)
    cfg["data_cfg"]["dataset_name"] = dataset
    model = from_opengait(cfg).eval()
    assert isinstance(model, GaitBase)
    assert set(model.state_dict()) == set(_fixture()["state_dict"])  # same layout whatever the dataset
    parts = sum(cfg["model_cfg"]["bin_num"])
    out_c = cfg["model_cfg"]["SeparateFCs"]["out_channels"]
    assert model.BNNecks.fc_bin.shape == (parts, out_c, classes)
    with torch.no_grad():
        out = model(_sils())
    assert out.embeddings.shape == (2, out_c, parts) and out.logits.shape == (2, classes, parts)
    assert out.logits.abs().max() <= 1 + 1e-6  # cosine logits
    assert out.triplet_embeddings is None  # OpenGait triplet-trains and evaluates the same pre-BNNeck embedding


def test_gaitbase_alias_and_registry():
    assert MODELS["Baseline"] is MODELS["GaitBase"] is GaitBase
    cfg = _narrow_cfg()
    cfg["model_cfg"]["model"] = "GaitBase"
    torch.manual_seed(1)
    via_alias = from_opengait(cfg)
    cfg["model_cfg"]["model"] = "Baseline"
    torch.manual_seed(1)
    via_class = from_opengait(cfg["model_cfg"])
    assert all(torch.equal(v, via_class.state_dict()[k]) for k, v in via_alias.state_dict().items())
    small = build_model("GaitBase", channels=[4, 4, 8, 8], out_channels=8, class_num=5)
    assert small.BNNecks.fc_bin.shape[-1] == 5


def test_backbone_layout_variants():
    cfg = _narrow_cfg(parallel_BN1d=False, norm=True)
    mc = cfg["model_cfg"]
    mc["backbone_cfg"].update(layers=[2, 1, 0, 1], maxpool=True)
    mc["SeparateFCs"]["norm"] = True
    mc["bin_num"] = [4, 2]
    for section in ("SeparateFCs", "SeparateBNNecks"):
        mc[section]["parts_num"] = 6
    model = from_opengait(cfg).eval()
    keys = set(model.state_dict())
    assert "Backbone.forward_block.layer1.1.conv2.weight" in keys
    assert not any(k.startswith("Backbone.forward_block.layer3.") for k in keys)  # 0 blocks: identity
    assert "BNNecks.bn1d.5.weight" in keys and "BNNecks.bn1d.weight" not in keys  # one BN per part
    with torch.no_grad():
        out = model(_sils())
    assert out.embeddings.shape == (2, mc["SeparateFCs"]["out_channels"], 6)


def test_backbone_cfg_defaults_follow_opengait_resnet9():
    cfg = _narrow_cfg()
    backbone = cfg["model_cfg"]["backbone_cfg"]
    del backbone["layers"], backbone["maxpool"]  # OpenGait's ResNet9 defaults: layers [1, 2, 2, 1], maxpool on
    model = from_opengait(cfg)
    assert "Backbone.forward_block.layer2.1.conv1.weight" in model.state_dict()
    assert isinstance(model.Backbone.forward_block.maxpool, torch.nn.MaxPool2d)


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        (None, "typo_key", 1, "typo_key"),
        ("backbone_cfg", "typo_key", 1, "typo_key"),
        ("SeparateBNNecks", "typo_key", 1, "typo_key"),
        ("backbone_cfg", "block", "Bottleneck", "BasicBlock"),
        ("backbone_cfg", "type", "ResNet18", "ResNet9"),
        ("backbone_cfg", "layers", [1, 1, 1], "layers"),
        ("SeparateFCs", "in_channels", 3, "SeparateFCs.in_channels"),
        ("SeparateBNNecks", "in_channels", 3, "SeparateBNNecks.in_channels"),
        ("SeparateBNNecks", "parts_num", 3, "SeparateBNNecks.parts_num"),
    ],
)
def test_bad_model_cfg_is_rejected_naming_the_key(section, key, value, match):
    cfg = _narrow_cfg()
    target = cfg["model_cfg"] if section is None else cfg["model_cfg"][section]
    target[key] = value
    with pytest.raises(ValueError, match=match):
        from_opengait(cfg)


def test_missing_required_entry_is_named():
    cfg = _narrow_cfg()
    del cfg["model_cfg"]["bin_num"]
    with pytest.raises(ValueError, match="bin_num"):
        from_opengait(cfg)


def test_hydra_configs_build_the_casia_b_gaitbase():
    classes = 7
    student = OmegaConf.load(CONF_DIR / "student" / "gaitbase.yaml")
    teacher = OmegaConf.load(CONF_DIR / "teacher" / "gaitbase.yaml")
    assert student.logit_scale == teacher.logit_scale and student.label_smooth is True
    model = build_from_node(student.model, num_classes=classes)
    assert isinstance(model, GaitBase) and model.BNNecks.fc_bin.shape[-1] == classes
    t_model = instantiate(OmegaConf.merge(teacher.model, {"class_num": classes}))
    reference = GaitBase(class_num=classes)  # the class defaults are OpenGait's CASIA-B config
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert {k: v.shape for k, v in t_model.state_dict().items()} == shapes
