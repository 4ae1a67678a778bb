"""The KD method zoo: properties of each slot loss beyond the fixtures, and what the branch refuses or adapts."""

from __future__ import annotations

import pytest
import torch

from gaitkd.distill import (
    AttentionTransferLoss,
    DecisionKD,
    FeatureKD,
    FeatureMSELoss,
    HintonKD,
    LogitKD,
)
from gaitkd.distill.branch import KDBranch, OutputShape
from gaitkd.errors import ConfigError
from gaitkd.losses import LOSSES

LOGIT_LOSSES = sorted(n for n, c in LOSSES.items() if issubclass(c, LogitKD))
FEATURE_LOSSES = sorted(n for n, c in LOSSES.items() if issubclass(c, FeatureKD))


def logits(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n, k, _ = shape
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g), torch.randint(k, (n,), generator=g)


def target(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_zoo_is_registered_by_slot() -> None:
    assert {"decision_kl", "kd", "logit_mse", "dkd", "ka_ps", "ka_lsr"} <= set(LOGIT_LOSSES)
    assert {"activation_boundary", "feat_mse", "attention_transfer"} <= set(FEATURE_LOSSES)
    assert all(LOSSES[n].slot == "decision" for n in LOGIT_LOSSES)
    assert all(LOSSES[n].slot == "boundary" for n in FEATURE_LOSSES)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_logit_losses_calibrate_each_model_on_its_own_scale(name: str) -> None:
    """``teacher_scale`` is the same as pre-scaling the teacher's logits; equal inputs give a zero loss."""
    s, t, y = logits(6, 5, 3)
    mixed, _ = LOSSES[name](scale=8.0, teacher_scale=2.0)(logits_s=s, logits_t=t, labels=y)
    same, _ = LOSSES[name](scale=8.0)(logits_s=s, logits_t=t / 4.0, labels=y)
    assert torch.allclose(mixed, same, rtol=1e-5) and mixed.item() > 0
    with pytest.raises(ValueError, match=LOSSES[name].__name__):
        LOSSES[name]()(logits_s=s, logits_t=t[:, :, :2], labels=y)


@pytest.mark.parametrize("name", [n for n in LOGIT_LOSSES if LOSSES[n].needs_labels])
def test_label_aware_losses_need_labels(name: str) -> None:
    s, t, _ = logits(4, 5, 2)
    with pytest.raises(ValueError, match="needs labels"):
        LOSSES[name]()(logits_s=s, logits_t=t, labels=None)


def test_hinton_kd_matches_distributions_on_average_only() -> None:
    s, t, _ = logits(4, 6, 3)
    kd = HintonKD(T=2.0)
    # one part: the sequence distribution is the part distribution, as in the part-wise KL
    single = kd(logits_s=s[:, :, :1], logits_t=t[:, :, :1])[0]
    assert torch.allclose(single, DecisionKD(T=2.0)(logits_s=s[:, :, :1], logits_t=t[:, :, :1])[0], rtol=1e-5)
    # the parts' order does not matter, and permuted teacher parts are already a perfect match on average
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(kd(logits_s=s[:, :, perm], logits_t=t)[0], kd(logits_s=s, logits_t=t)[0], rtol=1e-5)
    assert kd(logits_s=t[:, :, perm], logits_t=t)[0].abs().item() < 1e-5
    assert DecisionKD(T=2.0)(logits_s=t[:, :, perm], logits_t=t)[0].item() > 1e-3


def test_attention_transfer_ignores_width_and_scale() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 4, 5, generator=g), torch.randn(3, 9, 5, generator=g)
    at = AttentionTransferLoss(p=2.0)
    assert at(feats_s=s, feats_t=t)[0].item() > 0
    assert at(feats_s=3.0 * s, feats_t=s)[0].abs().item() < 1e-6  # normalised: only the per-part profile counts
    with pytest.raises(ValueError, match="channels aside"):
        at(feats_s=s, feats_t=t[:, :, :4])
    with pytest.raises(ValueError, match="FeatureMSELoss"):
        FeatureMSELoss()(feats_s=s, feats_t=t)


# ---------------------------------------------------------------------------------------------------- KDBranch
STUDENT = OutputShape(channels=8, parts=4, classes=5)
TEACHER = OutputShape(channels=12, parts=6, classes=5)


def slot(cls: type, **hparams) -> dict:
    return {"_target_": target(cls), "weight": 1.0, **hparams}


def test_branch_adds_a_connector_only_for_element_wise_boundary_losses() -> None:
    mse = KDBranch(STUDENT, TEACHER, boundary=slot(FeatureMSELoss))
    at = KDBranch(STUDENT, TEACHER, boundary=slot(AttentionTransferLoss))
    assert mse.connector is not None and at.connector is None
    assert KDBranch(STUDENT, OutputShape(8, 6, 5), boundary=slot(FeatureMSELoss)).connector is None


@pytest.mark.parametrize(
    ("teacher", "decision", "boundary", "match"),
    [
        (OutputShape(12, 6, None), slot(DecisionKD), None, r"distill\.decision \(DecisionKD\) needs teacher logits"),
        (TEACHER, slot(FeatureMSELoss), None, r"distill\.decision takes a logit-level .* put it under distill"
                                              r"\.boundary"),
        (TEACHER, None, slot(HintonKD), r"distill\.boundary takes an embedding-level .* distill\.decision"),
        (TEACHER, {"_target_": "torch.nn.MSELoss"}, None, "not a KD branch loss"),
        (TEACHER, {"_target_": "gaitkd.distill.NoSuchLoss"}, None, r"distill\.decision\._target_=.*cannot import"),
        (TEACHER, slot(DecisionKD, tau=2.0), None, r"distill\.decision: cannot build .*DecisionKD"),
        (TEACHER, {"T": 2.0}, None, r"distill\.decision needs a `_target_`"),
    ],
    ids=["no-teacher-classifier", "boundary-loss-as-decision", "decision-loss-as-boundary", "foreign-class",
         "unknown-class", "unknown-hparam", "no-target"],
)
def test_branch_refuses_bad_combinations(teacher, decision, boundary, match) -> None:
    with pytest.raises(ConfigError, match=match):
        KDBranch(STUDENT, teacher, decision=decision, boundary=boundary)


def test_branch_refuses_unknown_part_align() -> None:
    with pytest.raises(ConfigError, match="distill.part_align"):
        KDBranch(STUDENT, TEACHER, boundary=slot(FeatureMSELoss), part_align="max")
