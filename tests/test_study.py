"""Ablation studies (experiments/*.yaml -> one multirun), `gaitkd report`, and the Optuna search config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import REPO
from gaitkd.cli import main as cli_main
from gaitkd.errors import ConfigError
from gaitkd.report import report
from gaitkd.run import CONF_DIR
from gaitkd.study import load_study, study_command

STUDIES = sorted((REPO / "experiments").glob("*.yaml"))


def _fake_job(root: Path, num: int, overrides: list[str], metrics: dict) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps(metrics))


def test_report_groups_seeds_and_writes_table_and_plots(tmp_path: Path) -> None:
    values = {("gaitkd", 0): 60.0, ("gaitkd", 1): 64.0, ("none", 0): 50.0, ("none", 1): 51.0}
    for num, ((distill, seed), nm) in enumerate(values.items()):
        _fake_job(tmp_path, num, ["+experiment=gaitgl_to_gaitset", f"distill={distill}", f"seed={seed}"],
                  {"NM@R1": nm, "BG@R1": nm - 10, "CL@R1": nm - 20, "seed": seed, "train_seconds": 3.0})
    payload = report(tmp_path)
    assert payload["metrics"] == ["NM@R1", "BG@R1", "CL@R1"] and payload["runs"] == 4
    rows = {r["label"]: r for r in payload["rows"]}
    assert set(rows) == {"distill=gaitkd", "distill=none"}  # the constant +experiment and the seeds fold away
    assert rows["distill=gaitkd"]["NM@R1"]["mean"] == pytest.approx(62.0)
    assert rows["distill=gaitkd"]["NM@R1"]["std"] == pytest.approx(np.std([60.0, 64.0], ddof=1))
    assert rows["distill=none"]["seeds"] == ["0", "1"]
    table = (tmp_path / "report.md").read_text()
    assert "| distill=gaitkd | 2 | 62.00 ± 2.83 | 52.00 ± 2.83 | 42.00 ± 2.83 |" in table
    with Image.open(tmp_path / "report.png") as png:
        assert png.size[0] > 300 and png.size[1] > 200


def test_report_pairs_each_row_with_the_baseline_seed_by_seed(tmp_path: Path) -> None:
    values = {("gaitkd", 0): 60.0, ("gaitkd", 1): 49.0, ("gaitkd", 2): 57.0,
              ("none", 0): 50.0, ("none", 1): 51.0, ("none", 2): 52.0, ("kd", 1): 53.0}
    for num, ((variant, seed), nm) in enumerate(values.items()):
        _fake_job(tmp_path, num, [f"+variant={variant}", f"seed={seed}"], {"NM@R1": nm})
    payload = report(tmp_path, label_key="variant", baseline="none")
    paired = {r["label"]: r for r in payload["paired"]["rows"]}
    assert set(paired) == {"gaitkd", "kd"}
    diffs = [10.0, -2.0, 5.0]
    assert paired["gaitkd"]["NM@R1"]["mean"] == pytest.approx(np.mean(diffs))
    assert paired["gaitkd"]["NM@R1"]["std"] == pytest.approx(np.std(diffs, ddof=1))
    assert (paired["gaitkd"]["NM@R1"]["wins"], paired["gaitkd"]["NM@R1"]["n"]) == (2, 3)
    assert paired["kd"]["seeds"] == ["1"] and paired["kd"]["NM@R1"]["mean"] == pytest.approx(2.0)
    table = (tmp_path / "report.md").read_text()
    assert f"| gaitkd | 3 | +4.33 ± {np.std(diffs, ddof=1):.2f} (2/3) |" in table
    with pytest.raises(ConfigError, match="--baseline plain: no row of that name; rows: gaitkd, none, kd"):
        report(tmp_path, label_key="variant", baseline="plain")


def test_report_labels_rows_by_one_key_and_plots_per_view_curves(tmp_path: Path) -> None:
    views = ["000", "090", "180"]
    for num, (variant, extra, seed) in enumerate([("gaitkd", "distill=gaitkd", 0), ("gaitkd", "distill=gaitkd", 1),
                                                  ("truncate", "distill.part_align=truncate", 0)]):
        _fake_job(tmp_path, num, [f"+variant={variant}", extra, f"seed={seed}"], {"NM@R1": 50.0 + num})
        per_view = {"views": views, "rows": {c: [10.0 * num + i for i in range(3)] for c in ("NM", "BG", "CL")}}
        (tmp_path / str(num) / "per_view.json").write_text(json.dumps(per_view))
    payload = report(tmp_path, label_key="variant")
    assert [(r["label"], r["seeds"]) for r in payload["rows"]] == [("gaitkd", ["0", "1"]), ("truncate", ["0"])]
    assert str(tmp_path / "report_per_view.png") in payload["plots"]
    with Image.open(tmp_path / "report_per_view.png") as png:
        assert png.size[0] > 600


def test_report_plots_a_numeric_sweep_and_refuses_empty_folders(tmp_path: Path) -> None:
    for num, t in enumerate([1, 2, 4, 8]):
        _fake_job(tmp_path / "sweep", num, [f"distill.decision.T={t}", "seed=0"], {"Rank-1": 10.0 + t, "mAP": 5.0})
    payload = report(tmp_path / "sweep")
    assert [r["settings"]["distill.decision.T"] for r in payload["rows"]] == ["1", "2", "4", "8"]
    assert (tmp_path / "sweep" / "report_distill.decision.T.png").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no finished job"):
        report(tmp_path / "empty")


def test_study_files_parse_and_compose(tmp_path: Path) -> None:
    """Every study's first and last job composes with Hydra, so no swept key or option is misspelt."""
    assert len(STUDIES) >= 7
    for path in STUDIES:
        study = load_study(path)
        cmd = study_command(study, ["teacher.ckpt=x.ckpt"], tmp_path)
        assert cmd[cmd.index("gaitkd.run") + 2 :][-1] == f"hydra.sweep.dir={tmp_path}"
        for pick in (0, -1):
            job = [*study.base, *(f"{k}={v[pick]}" for k, v in study.sweep.items()), "teacher.ckpt=x.ckpt"]
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                compose("run", overrides=job)


def test_study_user_overrides_replace_swept_keys(tmp_path: Path) -> None:
    study = load_study(REPO / "experiments" / "branches.yaml")
    cmd = study_command(study, ["seed=0", "distill=gaitkd,none", "+preset=tiny"], tmp_path)
    args = cmd[cmd.index("gaitkd.run") + 2 :]
    assert args[0] == "+experiment=gaitgl_to_gaitset" and "seed=0" in args and "distill=gaitkd,none" in args
    assert not any(a.startswith("distill=gaitkd,decision_only") or a.startswith("seed=0,1") for a in args)
    assert args.index("+preset=tiny") > args.index("+experiment=gaitgl_to_gaitset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: {seed: []}\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        load_study(bad)


def _toy(cache_dir: Path, teacher_ckpt: Path) -> list[str]:
    return ["data=synthetic", "student=gaitset_small", "teacher=gaitgl_narrow", f"teacher.ckpt={teacher_ckpt}",
            f"paths.cache_dir={cache_dir}", "+preset=tiny"]


def test_toy_study_runs_two_jobs_and_reports(tmp_path: Path, cache_dir: Path, teacher_ckpt: Path) -> None:
    sweep = tmp_path / "branches"
    cli_main(["study", str(REPO / "experiments" / "branches.yaml"), "seed=0", "distill=gaitkd,none",
              *_toy(cache_dir, teacher_ckpt), "--sweep-dir", str(sweep)])
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    cli_main(["report", str(sweep)])
    payload = json.loads((sweep / "report.json").read_text())
    assert [r["label"] for r in payload["rows"]] == ["distill=gaitkd", "distill=none"]
    assert payload["metrics"] == ["NM@R1", "BG@R1", "CL@R1"]
    assert all(0.0 <= r["NM@R1"]["mean"] <= 100.0 and r["NM@R1"]["std"] is None for r in payload["rows"])
    assert "±" not in (sweep / "report.md").read_text()  # one seed each: the mean alone, no made-up spread
    assert (sweep / "report.png").is_file()


def test_optuna_search_runs_two_trials(tmp_path: Path, cache_dir: Path, teacher_ckpt: Path) -> None:
    sweep = tmp_path / "optuna"
    cmd = [sys.executable, "-m", "gaitkd.run", "+experiment=gaitgl_to_gaitset", *_toy(cache_dir, teacher_ckpt),
           "+hparams_search=kd_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
           f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    trials = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(trials) == 2
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "distill.decision.T" in best
