"""Every ``distill=`` option composes to the slot losses it names and trains two KD steps end to end."""

from __future__ import annotations

import math

import pytest
from hydra.utils import get_class

import gaitkd.run
from conftest import kd_overrides, make_cfg
from gaitkd.distill import (
    ActivationBoundaryLoss,
    AttentionTransferLoss,
    DecisionKD,
    DKDLoss,
    FeatureMSELoss,
    HintonKD,
    KALabelSmoothingKD,
    KAProbabilityShiftKD,
    LogitMSEKD,
)
from gaitkd.run import CONF_DIR

# option -> (decision-slot class, boundary-slot class); None = the slot is off
OPTIONS = {
    "gaitkd": (DecisionKD, ActivationBoundaryLoss),
    "decision_only": (DecisionKD, None),
    "boundary_only": (None, ActivationBoundaryLoss),
    "none": (None, None),
    "kd": (HintonKD, None),
    "logit_mse": (LogitMSEKD, None),
    "dkd": (DKDLoss, None),
    "ka_ps": (KAProbabilityShiftKD, None),
    "ka_lsr": (KALabelSmoothingKD, None),
    "logit_std": (DecisionKD, None),
    "feat_mse": (None, FeatureMSELoss),
    "at": (None, AttentionTransferLoss),
}


def test_every_option_file_is_covered() -> None:
    assert set(OPTIONS) == {p.stem for p in (CONF_DIR / "distill").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_distill_option_trains_two_steps(name, tmp_path, cache_dir, teacher_ckpt, monkeypatch) -> None:
    cfg = make_cfg(tmp_path, cache_dir, *kd_overrides(teacher_ckpt), f"distill={name}", "test=false")
    decision_cls, boundary_cls = OPTIONS[name]
    for key, cls in (("decision", decision_cls), ("boundary", boundary_cls)):
        node = cfg.distill.get(key)
        assert (node is None) == (cls is None), (name, key, node)
        if cls is not None:
            assert issubclass(get_class(node["_target_"]), cls), (name, key)
    if name == "logit_std":
        assert cfg.distill.decision.standardize is True

    built = {}
    build = gaitkd.run.build
    monkeypatch.setattr(gaitkd.run, "build", lambda c: built.setdefault("run", build(c)))
    gaitkd.run.train(cfg)

    run = built["run"]
    assert run.trainer.global_step == 2
    logged = {k: float(v) for k, v in run.trainer.callback_metrics.items()}
    assert math.isfinite(logged["train/loss"])
    for term, cls in (("decision_kd", decision_cls), ("boundary_kd", boundary_cls)):
        values = [v for k, v in logged.items() if k.startswith("train/") and k.endswith(f"/{term}")]  # per teacher
        assert bool(values) == (cls is not None), (name, term, sorted(logged))
        assert all(map(math.isfinite, values)), (name, term, values)
