"""`validate_config`: every bad config is one error naming the key and the fix, before any data or model is built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

import gaitkd.data.synthetic as synthetic_module
import gaitkd.validate as validate_module
from conftest import kd_overrides, make_cfg
from gaitkd.data import GaitDataError, GaitDataModule
from gaitkd.errors import ConfigError
from gaitkd.run import REPO_ROOT, build
from test_failfast import write_corpus

# the subprocesses import this checkout's sources (a relative PYTHONPATH would not survive their cwd)
CLI_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
TRAIN_IDS = 3  # the tiny preset's synthetic dataset: 3 training identities, sequences of 8..12 frames
LONGEST = 12


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if anything generates, checks or decodes data (validation must come first)."""

    def touched(*args, **kwargs):
        raise AssertionError("data was generated or set up before the config was validated")

    monkeypatch.setattr(GaitDataModule, "prepare_data", touched)
    monkeypatch.setattr(GaitDataModule, "setup", touched)
    monkeypatch.setattr(synthetic_module, "ensure_synthetic", touched)


@pytest.fixture
def fake_ckpt(tmp_path) -> Path:
    """A teacher checkpoint path that exists: validation only looks for the file, it loads nothing."""
    path = tmp_path / "teacher.ckpt"
    path.write_bytes(b"never read by validation")
    return path


def cfg_with(tmp_path, cache_dir, *overrides: str, **values):
    """``make_cfg`` (tiny preset), then ``values`` (``"data__batch_p"`` -> ``data.batch_p``) set over the preset."""
    cfg = make_cfg(tmp_path / "out", cache_dir, *overrides)
    with open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


def real_root(cfg, root: Path):
    """Point a composed synthetic config at a folder on disk instead."""
    with open_dict(cfg):
        cfg.data.synthetic = None
        cfg.data.root = str(root)
    return cfg


def id_folders(root: Path, train: list[str], test: list[str]) -> Path:
    """Id folders (no pkls: validation must not need them) plus partition.json."""
    for sid in train + test:
        (root / sid).mkdir(parents=True)
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": train, "TEST_SET": test}))
    return root


def fails(cfg, error: type[Exception], *parts: str) -> str:
    """``build(cfg)`` raises ``error`` whose one-line message contains every part; returns the message."""
    with pytest.raises(error) as info:
        build(cfg)
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------------------ a. unknown options
def test_unknown_group_option_names_the_group_and_its_options(tmp_path):
    """Hydra refuses it while composing: a short message (no traceback) naming the group and listing its options."""
    proc = subprocess.run([sys.executable, "-m", "gaitkd.run", "student=gaitsett", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=CLI_ENV)
    assert proc.returncode != 0
    assert "Could not find 'student/gaitsett'" in proc.stderr
    assert "Available options in 'student'" in proc.stderr and "gaitset_small" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_data_key(tmp_path, cache_dir, no_data):
    cfg = cfg_with(tmp_path, cache_dir, data__batchp=3)
    fails(cfg, ConfigError, "data.batchp is not a GaitDataModule argument", "fix its spelling")


def test_unknown_or_bad_perf_switch(tmp_path, cache_dir, no_data):
    fails(cfg_with(tmp_path, cache_dir, perf__compile=True), ConfigError, "perf.compile: unknown switch")
    fails(cfg_with(tmp_path, cache_dir, perf__teacher_autocast="fp8"), ConfigError, "perf.teacher_autocast=fp8")


def test_bad_sampler_value_names_its_key(tmp_path, cache_dir, no_data):
    fails(cfg_with(tmp_path, cache_dir, data__train_frames=0), ConfigError, "data.train_frames must be >= 1")


# --------------------------------------------------------------------------- b. teacher / student incompatible
def test_teacher_class_count_differs_from_training_ids(tmp_path, cache_dir, no_data, fake_ckpt):
    cfg = cfg_with(tmp_path, cache_dir, *kd_overrides(fake_ckpt), teacher__model__class_num=74)
    fails(cfg, ConfigError, "teacher.model.class_num=74", f"{TRAIN_IDS} training identities",
          "set teacher.model.class_num=null")


def test_student_class_count_differs_from_training_ids(tmp_path, cache_dir, no_data):
    cfg = cfg_with(tmp_path, cache_dir, "+experiment=train_gaitgl", "student=gaitgl_narrow",
                   student__model__class_num=74)
    fails(cfg, ConfigError, "student.model.class_num=74", "set student.model.class_num=null")


@pytest.mark.parametrize(("key", "value", "modes"), [
    ("distill.part_align", "crop", "truncate, pool, interpolate"),
    ("distill.connector", "both", "student, teacher"),
    ("teacher.distill.part_align", "crop", "truncate, pool, interpolate"),  # the teacher's own override
])
def test_impossible_part_alignment_or_connector(tmp_path, cache_dir, no_data, fake_ckpt, key, value, modes):
    cfg = cfg_with(tmp_path, cache_dir, *kd_overrides(fake_ckpt), **{key.replace(".", "__"): value})
    fails(cfg, ConfigError, f"{key}={value}", f"set {key} to one of {modes}")


# --------------------------------------------------------------------------------- c. missing teacher checkpoint
def test_missing_teacher_checkpoint(tmp_path, cache_dir, no_data):
    missing = tmp_path / "nope.ckpt"
    cfg = cfg_with(tmp_path, cache_dir, *kd_overrides(missing))
    fails(cfg, ConfigError, f"teacher.ckpt={missing}: no such file", "pass teacher.ckpt=PATH")


def test_unset_teacher_checkpoint(tmp_path, cache_dir, no_data):
    cfg = cfg_with(tmp_path, cache_dir, "+experiment=gaitgl_to_gaitset", "teacher=gaitgl_narrow")
    fails(cfg, ConfigError, "`teacher.ckpt` is not set", "pass teacher.ckpt=PATH")


# ------------------------------------------------------------------------------------------ d. unreadable root
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_data_root_missing_or_not_a_folder(tmp_path, cache_dir, no_data, kind):
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("not a folder")
    cfg = real_root(cfg_with(tmp_path, cache_dir), root)
    what = "does not exist" if kind == "missing" else "is a file, not a folder"
    fails(cfg, GaitDataError, f"data.root={root} {what}", "point data.root at an OpenGait pkl folder", "data=synthetic")


def test_data_root_without_permission(tmp_path, cache_dir, no_data, monkeypatch):
    root = id_folders(tmp_path / "root", ["001", "002"], ["003"])
    if os.geteuid() != 0:  # root reads anything: then simulate the refusal
        root.chmod(0)
    else:
        listdir = os.scandir

        def refuse(path):
            if Path(path) == root:
                raise PermissionError(13, "Permission denied", str(path))
            return listdir(path)

        monkeypatch.setattr(os, "scandir", refuse)
    try:
        cfg = real_root(cfg_with(tmp_path, cache_dir), root)
        fails(cfg, GaitDataError, f"data.root={root} cannot be listed (PermissionError)", "read and execute permission")
    finally:
        root.chmod(0o755)


def test_missing_partition_file(tmp_path, cache_dir, no_data):
    root = id_folders(tmp_path / "root", ["001", "002"], ["003"])
    cfg = real_root(cfg_with(tmp_path, cache_dir, data__partition=str(tmp_path / "nope.json")), root)
    fails(cfg, GaitDataError, f"data.partition={tmp_path / 'nope.json'} is not a file", "set it to null")


# ---------------------------------------------------------------------------- e. frames the sampler cannot draw
@pytest.mark.parametrize(("values", "key", "needs"), [
    ({"data__train_frames": LONGEST + 1}, "data.train_frames=13", 13),
    ({"data__train_sample": "fixed_ordered", "data__train_frames": 8, "data__frames_skip": 5},
     "data.train_frames=8 + data.frames_skip=5", 13),
    ({"data__train_sample": "unfixed_unordered", "data__train_frames_min": 13, "data__train_frames_max": 20},
     "data.train_frames_min=13", 13),
])
def test_clip_longer_than_every_synthetic_sequence(tmp_path, cache_dir, no_data, values, key, needs):
    cfg = cfg_with(tmp_path, cache_dir, **values)
    fails(cfg, GaitDataError, f"{key} needs {needs} frames per clip", f"has {LONGEST}",
          f"lower {key.split('=')[0]}")


def test_clip_longer_than_every_sequence_on_disk_is_caught_by_the_data_check(tmp_path):
    """Real data: the frame counts are known once the check has decoded the pkls, still before training."""
    root = write_corpus(tmp_path / "data", broken=False)  # sequences of 6..9 frames
    dm = GaitDataModule(root=str(root), batch_p=2, batch_k=2, train_frames=10)
    with pytest.raises(GaitDataError, match=r"data.train_frames=10 needs 10 frames per clip .* lower data\.train_"):
        dm.setup("fit")
    assert dm.train_set is None


# ----------------------------------------------------------------------------------------- f. batch P vs. ids
def test_batch_p_larger_than_synthetic_training_ids(tmp_path, cache_dir, no_data):
    cfg = cfg_with(tmp_path, cache_dir, data__batch_p=TRAIN_IDS + 1)
    fails(cfg, GaitDataError, f"data.batch_p={TRAIN_IDS + 1} exceeds the {TRAIN_IDS} training identities",
          f"lower data.batch_p to at most {TRAIN_IDS}")


def test_batch_p_counts_training_id_folders_without_reading_pkls(tmp_path, cache_dir, no_data):
    root = id_folders(tmp_path / "root", ["001", "002", "004"], ["003"])
    (root / "004").rmdir()  # a TRAIN_SET id without a folder does not count
    cfg = real_root(cfg_with(tmp_path, cache_dir, data__batch_p=3), root)
    fails(cfg, GaitDataError, "data.batch_p=3 exceeds the 2 training identities", "at most 2")


def test_batch_p_times_ddp_processes(tmp_path, cache_dir, no_data):
    cfg = cfg_with(tmp_path, cache_dir, trainer__devices=2, trainer__strategy="ddp")
    fails(cfg, GaitDataError, "data.batch_p=2 x 2 processes", f"has {TRAIN_IDS} training identities",
          "lower data.batch_p to at most 1")


@pytest.mark.parametrize(("trainer", "expected"), [
    ({"devices": 1}, 1), ({"devices": 2, "num_nodes": 2}, 4), ({"devices": [0, 1]}, 2), ({"devices": "0,1,"}, 2),
    ({"devices": "auto"}, 1), ({"devices": -1}, 1), ({"devices": 4, "strategy": "single_device"}, 1),
])
def test_world_size(trainer, expected):
    assert validate_module.world_size(OmegaConf.create(trainer)) == expected


# ------------------------------------------------------------------------------------------------- the CLI
def test_cli_prints_one_line_and_exits_2(tmp_path, cache_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "gaitkd.run", "data=synthetic", "+preset=tiny", "data.batch_p=9",
         f"paths.cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, env=CLI_ENV,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]  # validation comes before anything logs
    assert lines == [f"gaitkd: error: data.batch_p=9 exceeds the {TRAIN_IDS} training identities of the synthetic "
                     f"dataset (data.synthetic.num_train): lower data.batch_p to at most {TRAIN_IDS}"]
