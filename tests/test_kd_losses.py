"""GaitKD branch losses (decision KL, activation boundary), part alignment, adapters and the full objective."""

from __future__ import annotations

import pytest
import torch

from conftest import load_fixture
from gaitkd.distill import (
    ActivationBoundaryLoss,
    AuxPartClassifier,
    DecisionKD,
    PartConnector,
    align_parts,
    weighted_sum,
)
from gaitkd.losses import OPENGAIT_LOSS_NAMES, build_loss
from test_losses import assert_close_grad, assert_close_loss

CFG_META_KEYS = ("type", "log_prefix", "loss_term_weight")


def fixture_inputs(fx: dict, case: dict) -> dict:
    """Resolve ``case['inputs']`` (keyword -> tensor key or list of keys) to cloned tensors."""

    def get(key):
        return [fx["tensors"][k].clone() for k in key] if isinstance(key, list) else fx["tensors"][key].clone()

    return {kw: get(key) for kw, key in case["inputs"].items()}


def cases_of(fx: dict, loss_class: str) -> dict:
    found = {name: c for name, c in fx["cases"].items() if c["loss_class"] == loss_class}
    assert found, f"no {loss_class} cases in fixture"
    return found


# every GaitKD KD-loss class of these fixtures, by file: each must have cases, and each case must match
FIXTURE_CLASSES = {
    "loss_kd_logits.pt": ("LogitsKD_KLLoss", "LogitsKD_KA_PSLoss", "LogitsKD_MSELoss", "LogitsKD_KA_LSR",
                          "LogitsKD_DKDLoss"),
    "loss_kd_feats.pt": ("FeatsKD_MSELoss", "FeatsKD_ABLoss", "FeatsKD_ATLoss"),
}


def as_list(x):
    return x if isinstance(x, list) else [x]


@pytest.mark.parametrize("fixture", sorted(FIXTURE_CLASSES))
def test_kd_losses_match_gaitkd(fixture: str) -> None:
    """Loss, every info entry and the student gradient of each case, built by name from GaitKD's class name."""
    fx = load_fixture(fixture)
    for loss_class in FIXTURE_CLASSES[fixture]:
        for name, case in cases_of(fx, loss_class).items():
            inputs = fixture_inputs(fx, case)
            student_kw = next(kw for kw in case["inputs"] if kw.endswith("_s"))
            student = as_list(inputs[student_kw])
            for x in student:
                x.requires_grad_(True)
            loss, info = build_loss(OPENGAIT_LOSS_NAMES[loss_class], **case["hparams"])(**inputs)
            assert_close_loss(loss.detach(), case["loss"], f"{name} loss")
            assert set(info) == set(case["info"]), name
            for key, ref in case["info"].items():
                assert_close_loss(info[key], ref, f"{name} info.{key}")
            loss.backward()
            refs = as_list(case[f"grad_{student_kw}"])
            for i, (x, ref) in enumerate(zip(student, refs, strict=True)):
                assert_close_grad(x.grad, ref, f"{name} grad[{i}]")


def test_decision_teacher_scale_and_standardize() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 7, 3, generator=g), torch.randn(4, 7, 3, generator=g)
    # a separate teacher scale is the same as pre-scaling the teacher logits
    mixed, _ = DecisionKD(T=2.0, scale=16.0, teacher_scale=1.0)(logits_s=s, logits_t=t)
    same, _ = DecisionKD(T=2.0, scale=16.0)(logits_s=s, logits_t=t / 16.0)
    assert torch.allclose(mixed, same, rtol=1e-5)
    # standardisation makes the loss blind to each model's own offset and scale
    std = DecisionKD(T=2.0, standardize=True)
    a, _ = std(logits_s=s, logits_t=t)
    b, _ = std(logits_s=3.0 * s + 1.0, logits_t=0.5 * t - 2.0)
    assert torch.allclose(a, b, rtol=1e-4)
    zero, _ = std(logits_s=t, logits_t=t)
    assert abs(zero.item()) < 1e-6 < a.item()
    with pytest.raises(ValueError, match="DecisionKD"):
        std(logits_s=s, logits_t=t[:, :, :2])


def test_activation_boundary_semantics() -> None:
    t = torch.tensor([[[1.0], [-1.0]]])  # [N=1, C=2, P=1]
    ab = ActivationBoundaryLoss(margin=1.0)
    assert ab(feats_s=torch.tensor([[[2.0], [-2.0]]]), feats_t=t)[0].item() == 0.0  # right side, past margin
    # (0-1)^2 + (0+1)^2 for a student sitting on the boundary
    assert ab(feats_s=torch.zeros(1, 2, 1), feats_t=t)[0].item() == pytest.approx(2.0)
    # zip with feat_num=1 weights uses only the first list entry
    extra = torch.full((1, 2, 1), 5.0)
    assert ab(feats_s=[torch.zeros(1, 2, 1), extra], feats_t=[t, -extra])[0].item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="ActivationBoundaryLoss"):
        ab(feats_s=torch.zeros(1, 2, 1), feats_t=torch.zeros(1, 2, 2))


def test_align_parts_modes() -> None:
    x = torch.randn(2, 5, 8)
    for mode in ("truncate", "pool", "interpolate"):
        assert align_parts(x, 8, mode) is x
        assert align_parts(x, 3, mode).shape == (2, 5, 3)
    assert torch.equal(align_parts(x, 3, "truncate"), x[:, :, :3])
    const = torch.full((2, 5, 8), 1.5)
    for mode in ("pool", "interpolate"):
        assert torch.allclose(align_parts(const, 3, mode), torch.full((2, 5, 3), 1.5))
        assert align_parts(x, 11, mode).shape == (2, 5, 11)
    assert torch.allclose(align_parts(x, 4, "pool"), x.view(2, 5, 4, 2).mean(-1))
    with pytest.raises(ValueError, match="truncate"):
        align_parts(x, 9, "truncate")
    with pytest.raises(ValueError, match="unknown mode"):
        align_parts(x, 4, "max")


def test_connector_and_aux_classifier() -> None:
    x = torch.randn(6, 4, 3, requires_grad=True)
    conn = PartConnector(parts=3, in_channels=4, out_channels=7)
    y = conn(x)
    assert y.shape == (6, 7, 3)
    # part p only sees part p's input through its own weight
    assert torch.allclose(y[:, :, 1], x[:, :, 1] @ conn.weight[1], atol=1e-6)
    head = AuxPartClassifier(parts=3, channels=4, num_classes=9)
    logits = head(x)
    assert logits.shape == (6, 9, 3) and logits.abs().max() <= 1 + 1e-6
    logits.sum().backward()
    assert head.weight.grad is not None and x.grad is not None


def test_weighted_sum() -> None:
    total = weighted_sum({"a": (2.0, torch.tensor([1.0, 3.0])), "b": (0.5, torch.tensor(4.0))})
    assert total.item() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        weighted_sum({})


def test_gaitkd_objective_matches_fixture() -> None:
    fx = load_fixture("kd_aggregate.pt")
    emb = fx["embeddings_s"].clone().requires_grad_(True)
    logits = fx["logits_s"].clone().requires_grad_(True)
    labels = fx["labels"]
    terms, infos = {}, {}
    for cfg in fx["loss_cfg"]:
        crit = build_loss(OPENGAIT_LOSS_NAMES[cfg["type"]], **{k: v for k, v in cfg.items() if k not in CFG_META_KEYS})
        prefix = cfg["log_prefix"]
        if cfg["type"] == "TripletLoss":
            inputs = {"embeddings": emb, "labels": labels}
        elif cfg["type"] == "CrossEntropyLoss":
            inputs = {"logits": logits, "labels": labels}
        else:
            name = prefix.split("_", 2)[2]  # kd_logits_<teacher> / kd_feats_<teacher>
            teacher, p_min = fx["teachers"][name], fx["p_min"][name]
            assert p_min == min(fx["P_s"], teacher["P_t"])
            if cfg["type"] == "LogitsKD_KLLoss":
                pair = {"logits_s": logits, "logits_t": teacher["logits_t"]}
            else:
                pair = {"feats_s": emb, "feats_t": teacher["embeddings_t"]}
            inputs = {k: align_parts(v, p_min, "truncate") for k, v in pair.items()}
            if cfg["type"] == "LogitsKD_KLLoss":
                inputs["labels"] = labels
        loss, info = crit(**inputs)
        terms[prefix] = (cfg["loss_term_weight"], loss)
        infos.update({f"scalar/{prefix}/{k}": v for k, v in info.items()})
    total = weighted_sum(terms)
    assert_close_loss(total.detach(), fx["loss_sum"], "loss_sum")
    assert set(fx["loss_info"]) <= set(infos)
    for key, ref in fx["loss_info"].items():
        if key.endswith(("loss_num", "accuracy")):
            assert torch.equal(torch.as_tensor(infos[key]), torch.as_tensor(ref, dtype=torch.float32)), key
        else:
            assert_close_loss(infos[key], ref, key)
    total.backward()
    assert_close_grad(emb.grad, fx["grad_embeddings_s"], "grad_embeddings_s")
    assert_close_grad(logits.grad, fx["grad_logits_s"], "grad_logits_s")
