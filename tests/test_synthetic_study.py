"""The study driver (experiments/synthetic_study/run.py): what it would run, and how it reports a failure."""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from gaitkd.run import CONF_DIR

spec = importlib.util.spec_from_file_location("study_driver", REPO / "experiments" / "synthetic_study" / "run.py")
driver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(driver)


def test_plan_has_teachers_then_every_variant_and_seed(tmp_path):
    runs = driver.plan(tmp_path, None, [0, 1, 2])
    assert [name for group, name, _ in runs[:2]] == ["gaitgl", "gaitbase"]
    per_student = {}
    for group, name, _ in runs[2:]:
        per_student.setdefault(group, set()).add(name)
    assert len(per_student["gaitset"]) == 9 * 3 and len(per_student["gaitpart"]) == 7 * 3
    assert {n.split("/")[0] for n in per_student["gaitpart"]} == set(driver.VARIANTS)


def test_every_planned_run_composes(tmp_path):
    """Each command line composes (group options, experiment overlays, relocated second teacher)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for scale in driver.SCALES:
            for group, name, overrides in driver.plan(tmp_path, None, [0], scale):
                cfg = compose("run", overrides=["data=synthetic", *overrides])
                assert cfg.seed == 0 or group == "teachers", (group, name)
                if name.startswith("two_teachers"):
                    assert cfg.teachers.gaitbase.model._target_.endswith("GaitBase")


def test_cost_estimate_counts_only_the_teachers_that_run(tmp_path):
    """cost.py prices a KD step as 3x the student's forward plus the teachers' forwards; a baseline runs none."""
    spec = importlib.util.spec_from_file_location("study_cost", REPO / "experiments" / "synthetic_study" / "cost.py")
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    for name in driver.TEACHERS:
        driver.teacher_ckpt(tmp_path, name).parent.mkdir(parents=True)
        driver.teacher_ckpt(tmp_path, name).touch()
    runs = {f"{g}/{n}": ov for g, n, ov in driver.plan(tmp_path, ["gaitset"], [0])}
    cache: dict = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        got = {key: cost.run_cost(compose("run", overrides=["data=synthetic", *runs[key]]), 20, cache)
               for key in ("gaitset/none/seed0", "gaitset/gaitkd/seed0", "gaitset/two_teachers/seed0")}
    base, kd, two = got.values()
    assert base["teacher_gflops"] == 0 < kd["teacher_gflops"] < two["teacher_gflops"]
    assert base["student_gflops"] == kd["student_gflops"] > 0
    for c in got.values():
        assert c["train_gflop"] == c["steps"] * c["batch"] * (3 * c["student_gflops"] + c["teacher_gflops"])


def test_concurrent_jobs_split_the_cores(monkeypatch):
    monkeypatch.setattr(driver.os, "cpu_count", lambda: 2)
    assert [driver.threads_per_job(j) for j in (1, 2, 3)] == [2, 1, 1]


def test_a_failed_concurrent_run_names_its_log(tmp_path):
    """With --jobs > 1 a run's output goes to its console.log; a failure says so instead of a bare exit code."""
    with pytest.raises(RuntimeError, match=r"g/n failed .*console\.log"):
        driver.run_one((tmp_path / "out", tmp_path / "keep"), "g", "n", ["student=no_such_model"], [], False, jobs=2)
    assert "no_such_model" in (tmp_path / "out" / "g" / "n" / "console.log").read_text()
    assert not (tmp_path / "keep").exists()  # nothing recorded for a failed run


def test_jobs_must_be_positive(monkeypatch, capsys):
    monkeypatch.setattr(driver.sys, "argv", ["run.py", "--jobs", "0", "--dry-run"])
    with pytest.raises(SystemExit):
        driver.main()
    assert "--jobs must be at least 1" in capsys.readouterr().err
