"""Several teachers: how their terms combine, GaitKD's two-teacher objective, a two-teacher run, bad configs."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import open_dict

from conftest import load_fixture, make_cfg, two_teacher_overrides
from gaitkd.distill import weighted_sum
from gaitkd.distill.branch import KDBranch, OutputShape
from gaitkd.errors import ConfigError
from gaitkd.losses import LOSSES, OPENGAIT_LOSS_NAMES, build_loss
from gaitkd.models.output import GaitOutput
from gaitkd.module import GaitKDModule
from gaitkd.run import build
from gaitkd.teacher_config import teacher_configs
from gaitkd.teachers import Teacher, combine_factors, combine_terms
from test_kd_losses import CFG_META_KEYS
from test_kd_pairs import CLASSES, distill_cfg, tiny
from test_losses import assert_close_grad, assert_close_loss


def fixed_terms() -> dict[str, dict[str, tuple[float, torch.Tensor]]]:
    return {
        "gaitgl": {"decision_kd": (1.0, torch.tensor(2.0)), "boundary_kd": (0.003, torch.tensor([10.0, 30.0]))},
        "gaitpart": {"boundary_kd": (0.5, torch.tensor(4.0))},
    }


@pytest.mark.parametrize("combine", ["sum", "mean", "weighted"])
def test_combine_modes_scale_each_teachers_terms(combine):
    terms, weights = fixed_terms(), {"gaitgl": 0.25, "gaitpart": 2.0}
    per_teacher = {name: float(sum(w * loss.mean() for w, loss in t.values())) for name, t in terms.items()}
    factor = {"sum": dict.fromkeys(weights, 1.0), "mean": dict.fromkeys(weights, 1 / len(weights)),
              "weighted": weights}[combine]
    combined = combine_terms(terms, combine_factors(combine, weights))
    assert set(combined) == {"gaitgl/decision_kd", "gaitgl/boundary_kd", "gaitpart/boundary_kd"}
    assert combined["gaitgl/boundary_kd"][1] is terms["gaitgl"]["boundary_kd"][1]  # losses pass through untouched
    expected = sum(factor[name] * value for name, value in per_teacher.items())
    assert float(weighted_sum(combined)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="distill.combine"):
        combine_factors("max", weights)


def gaitkd_slot(cfg: dict) -> tuple[str, dict, float | None]:
    """A GaitKD ``loss_cfg`` KD entry -> (our branch slot, its slot config, the logit scale it applies).

    GaitKD names its logit losses ``LogitsKD_*`` (our decision slot) and its embedding losses ``FeatsKD_*`` (boundary).
    """
    cls = LOSSES[OPENGAIT_LOSS_NAMES[cfg["type"]]]
    hparams = {k: v for k, v in cfg.items() if k not in CFG_META_KEYS}
    scale = hparams.pop("scale", None)
    slot = {"LogitsKD": "decision", "FeatsKD": "boundary"}[cfg["type"].split("_")[0]]
    slot_cfg = {"_target_": f"{cls.__module__}.{cls.__name__}", "weight": cfg["loss_term_weight"], **hparams}
    return slot, slot_cfg, scale


def test_sum_of_per_teacher_branches_is_gaitkds_two_teacher_objective():
    """One truncating KD branch per fixture teacher, combined with ``sum``: GaitKD's loss_sum and gradients."""
    fx = load_fixture("kd_aggregate.pt")
    emb = fx["embeddings_s"].clone().requires_grad_(True)
    logits = fx["logits_s"].clone().requires_grad_(True)
    labels, cfgs = fx["labels"], {c["log_prefix"]: c for c in fx["loss_cfg"]}
    inputs = {"triplet": {"embeddings": emb}, "softmax": {"logits": logits}}
    own = {}
    for prefix, kwargs in inputs.items():
        cfg = cfgs[prefix]
        crit = build_loss(OPENGAIT_LOSS_NAMES[cfg["type"]], **{k: v for k, v in cfg.items() if k not in CFG_META_KEYS})
        own[prefix] = (cfg["loss_term_weight"], crit(**kwargs, labels=labels)[0])
    out_s = GaitOutput(embeddings=emb, logits=logits)
    per_teacher = {}
    for name, teacher in fx["teachers"].items():
        slots, scales = {}, set()
        for prefix in (f"kd_logits_{name}", f"kd_feats_{name}"):
            slot, slot_cfg, scale = gaitkd_slot(cfgs[prefix])
            slots[slot] = slot_cfg
            scales |= {scale} - {None}
        (scale,) = scales
        out_t = GaitOutput(embeddings=teacher["embeddings_t"], logits=teacher["logits_t"])
        branch = KDBranch(OutputShape.of(out_s), OutputShape.of(out_t), part_align="truncate",
                          student_logit_scale=scale, teacher_logit_scale=scale, **slots)
        assert branch.parts == fx["p_min"][name] and branch.connector is None
        per_teacher[name] = branch(out_s, logits, out_t, labels=labels)
    total = weighted_sum({**own, **combine_terms(per_teacher, combine_factors("sum", dict.fromkeys(per_teacher, 1)))})
    assert_close_loss(total.detach(), fx["loss_sum"], "loss_sum")
    total.backward()
    assert_close_grad(emb.grad, fx["grad_embeddings_s"], "grad_embeddings_s")
    assert_close_grad(logits.grad, fx["grad_logits_s"], "grad_logits_s")


def test_two_teacher_run(tmp_path, cache_dir, teacher_ckpt, gaitpart_ckpt):
    """2 steps with GaitGL + GaitPart: both teachers' terms logged, teachers untouched, checkpoint student-only."""
    cfg = make_cfg(tmp_path, cache_dir, *two_teacher_overrides(teacher_ckpt, gaitpart_ckpt), "test=false")
    built = build(cfg)
    module, trainer = built.module, built.trainer
    assert list(module.teachers) == list(module.kd) == ["teacher", "gaitpart"]
    before = {n: {k: v.clone() for k, v in t.state_dict().items()} for n, t in module.teachers.items()}

    trainer.fit(module, datamodule=built.datamodule)

    logged = set(trainer.callback_metrics)
    expected = {"train/teacher/decision_kd", "train/teacher/boundary_kd", "train/teacher/teacher_accuracy",
                "train/gaitpart/boundary_kd"}
    assert expected <= logged, logged
    assert "train/gaitpart/decision_kd" not in logged and "train/gaitpart/teacher_accuracy" not in logged
    for name, teacher in module.teachers.items():
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        assert all(torch.equal(v, before[name][k]) for k, v in teacher.state_dict().items()), f"{name} changed"
    optimised = {id(p) for g in module.optimizers().optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in module.teachers.parameters()}

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teachers.")], "teacher weights in the checkpoint"
    assert any(k.startswith("kd.gaitpart.connector.") for k in ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=True)


def test_module_drops_teachers_that_add_no_term():
    boundary = distill_cfg(teacher_has_logits=False)
    teachers = {"on": Teacher(tiny("GaitSet"), boundary),
                "off": Teacher(tiny("GaitSet"), {**boundary, "boundary": None}),  # no loss on
                "zero": Teacher(tiny("GaitSet"), boundary, weight=0.0)}  # factor 0 under weighted
    module = GaitKDModule(tiny("GaitSet"), CLASSES, partial(torch.optim.SGD, lr=0.1), teachers=teachers,
                          combine="weighted")
    assert list(module.teachers) == list(module.kd) == ["on"]


@pytest.mark.parametrize("experiment", ["gaitgl_to_gaitset", "two_teachers"])
def test_no_kd_term_builds_no_teacher(experiment, tmp_path, cache_dir):
    """distill=none under a KD overlay (the baseline row of a sweep): no checkpoint needed, the plain student's cost."""
    module = build(make_cfg(tmp_path, cache_dir, f"+experiment={experiment}", "distill=none")).module
    plain = build(make_cfg(tmp_path, cache_dir, "+experiment=train_gaitset")).module
    assert not module.teachers and not module.kd
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize(("overrides", "match"), [
    (["teachers.gaitpart.ckpt=null"], "teachers.gaitpart.ckpt"),
    (["teachers.gaitpart.ckpt=/no/such/GaitPart.pt"], "teachers.gaitpart.ckpt=/no/such"),
    (["+teachers.gaitpart.ckp=x"], "teachers.gaitpart.ckp: unknown key"),
    (["+teachers.gaitpart.distill.T=2"], "teachers.gaitpart.distill.T: unknown key"),
    (["teachers.gaitpart.weight=0.5"], "teachers.gaitpart.weight=0.5 is only used with distill.combine=weighted"),
    (["distill.combine=max"], "distill.combine=max"),
    (["+teachers.teacher.model._target_=x"], "teachers.teacher: the name 'teacher'"),
])
def test_bad_teacher_config_is_one_error_naming_the_key(overrides, match, tmp_path, cache_dir, teacher_ckpt,
                                                       gaitpart_ckpt):
    cfg = make_cfg(tmp_path, cache_dir, *two_teacher_overrides(teacher_ckpt, gaitpart_ckpt), *overrides)
    with pytest.raises(ConfigError, match=match):
        teacher_configs(cfg)  # what build() checks first, before any data


def test_teacher_unfit_for_its_terms_is_refused_before_training(tmp_path, cache_dir, teacher_ckpt, gaitpart_ckpt):
    cfg = make_cfg(tmp_path, cache_dir, *two_teacher_overrides(teacher_ckpt, gaitpart_ckpt))
    with open_dict(cfg):
        cfg.teachers.gaitpart.distill.decision = cfg.distill.decision  # decision KD from a model without classifier
    with pytest.raises(ConfigError, match=r"teachers.gaitpart.model \(gaitkd.models.GaitPart\) has no classifier"):
        build(cfg)
    cfg = make_cfg(tmp_path, cache_dir, "+experiment=two_teachers", "teacher=none",
                   "teacher@teachers.gaitpart=gaitgl_narrow", f"teachers.gaitpart.ckpt={teacher_ckpt}")
    with open_dict(cfg):
        cfg.data.synthetic.num_train = 4  # the dataset now has 4 training ids, the GaitGL checkpoint knows 3
    with pytest.raises(ConfigError, match="(?s)teachers.gaitpart.ckpt=.*class count"):
        build(cfg)
