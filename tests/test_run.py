"""End to end through Hydra: every experiment composes and runs; KD touches only the student; bad input fails early."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import open_dict

from conftest import kd_overrides, make_cfg, two_teacher_overrides
from gaitkd.errors import ConfigError
from gaitkd.run import CONF_DIR, REPO_ROOT, build, train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(name, tmp_path, cache_dir, teacher_ckpt, gaitpart_ckpt, gaitbase_ckpt):
    extra = {"gaitgl_to_gaitset": kd_overrides(teacher_ckpt),
             "two_teachers": two_teacher_overrides(teacher_ckpt, gaitpart_ckpt),
             "gaitgl_gaitbase_to_gaitset": [*kd_overrides(teacher_ckpt)[1:], "+experiment=gaitgl_gaitbase_to_gaitset",
                                            "teacher@teachers.gaitbase=gaitbase_lite",
                                            f"teachers.gaitbase.ckpt={gaitbase_ckpt}"],
             }.get(name, [f"+experiment={name}"])
    if name == "train_gaitgl":
        extra.append("student=gaitgl_narrow")
    cfg = make_cfg(tmp_path, cache_dir, *extra, "+trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert metrics["params"] > 0 and metrics["infer_ms_per_seq"] > 0
    assert (tmp_path / "metrics.json").is_file()


def test_kd_two_steps_and_evaluation(tmp_path, cache_dir, teacher_ckpt):
    cfg = make_cfg(tmp_path, cache_dir, *kd_overrides(teacher_ckpt), "trainer.max_steps=2")
    metrics = train(cfg)
    for key in ("NM@R1", "BG@R1", "CL@R1"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["infer_ms_per_seq"] > 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teachers.")], "teacher weights leaked into checkpoint"
    assert any(k.startswith("student.") for k in ckpt["state_dict"])


def test_kd_step_updates_only_the_student(tmp_path, cache_dir, teacher_ckpt):
    """Through a real Trainer (which calls .train() on the module): teacher bit-identical, BN stats included."""
    # gaitset_narrow (128-d) under a 64-d GaitGL teacher: the run needs a width connector and an aux classifier
    cfg = make_cfg(tmp_path, cache_dir, *kd_overrides(teacher_ckpt), "student=gaitset_narrow", "trainer.max_steps=3")
    built = build(cfg)
    module = built.module
    teacher = module.teachers["teacher"]
    assert module.kd["teacher"].connector is not None and module.aux_head is not None
    teacher0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    student0 = {k: v.clone() for k, v in module.student.state_dict().items()}
    extra0 = {n: p.detach().clone() for n, p in module.named_parameters() if n.startswith(("aux_head.", "kd."))}
    assert extra0, "KD run has neither an aux classifier nor a connector"

    built.trainer.fit(module, datamodule=built.datamodule)

    assert not teacher.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher0[key]), f"teacher {key} changed"
    assert all(not p.requires_grad for p in teacher.parameters())
    assert [k for k, v in module.student.state_dict().items() if not torch.equal(v, student0[k])], "student unchanged"
    params = dict(module.named_parameters())
    moved = [n for n, v in extra0.items() if not torch.equal(params[n].detach(), v)]
    assert any(n.startswith("aux_head.") for n in moved), "aux classifier not trained"
    assert any(n.startswith("kd.") for n in moved), "connector not trained"
    optimised = {id(p) for g in module.optimizers().optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}


def test_kd_without_teacher_ckpt_is_a_clear_error(tmp_path, cache_dir):
    cfg = make_cfg(tmp_path, cache_dir, "+experiment=gaitgl_to_gaitset", "teacher=gaitgl_narrow")
    with pytest.raises(ConfigError, match="teacher.ckpt"):
        train(cfg)


def test_teacher_with_wrong_class_count_is_refused(tmp_path, cache_dir, teacher_ckpt):
    cfg = make_cfg(tmp_path, cache_dir, *kd_overrides(teacher_ckpt))
    with open_dict(cfg):
        cfg.data.synthetic.num_train = 4  # dataset now has 4 training ids, the teacher knows 3
    with pytest.raises(Exception, match="class"):
        train(cfg)


def test_cli_missing_casia_b_root_stops_with_clear_error(tmp_path):
    """Without data=synthetic and no CASIA-B on disk: one clear message pointing at data=synthetic."""
    proc = subprocess.run(
        [sys.executable, "-m", "gaitkd.run", "+experiment=train_gaitset", f"data.root={tmp_path / 'nope'}",
         f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode != 0
    assert "data=synthetic" in proc.stderr and str(tmp_path / "nope") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert REPO_ROOT.exists()


def test_student_init_loads_gaitkd_and_opengait_checkpoints(tmp_path, cache_dir):
    first = tmp_path / "first"
    train(make_cfg(first, cache_dir, "+experiment=train_gaitset", "test=false"))
    ckpt = first / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    student = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    opengait = tmp_path / "opengait.pt"
    torch.save({"model": student, "iteration": 2}, opengait)
    for init in (ckpt, opengait):
        built = build(make_cfg(tmp_path / "second", cache_dir, "+experiment=train_gaitset", f"student.init={init}"))
        loaded = built.module.student.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in student.items())
    bad = make_cfg(tmp_path / "third", cache_dir, "+experiment=train_gaitset", "student=gaitgl_narrow",
                   f"student.init={opengait}")
    with pytest.raises(ConfigError, match="(?s)student.init=.*missing keys"):
        build(bad)
