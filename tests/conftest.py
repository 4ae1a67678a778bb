"""Shared test helpers: where the reference fixtures live and how to load them.

The fixture folder comes from ``GAITKD_FIXTURES`` (default ``../shared/fixtures`` relative to the repo).
When the variable is set explicitly, a missing file is a test *failure*; otherwise it is a skip, so the
suite still runs on a machine without ``shared/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gaitkd.run import CONF_DIR, build_model, train

REPO = Path(__file__).resolve().parents[1]
_EXPLICIT = "GAITKD_FIXTURES" in os.environ
FIXTURES = Path(os.environ.get("GAITKD_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixture_path(name: str) -> Path:
    """Path of a fixture file; fails (explicit folder) or skips (default folder) when it is absent."""
    path = FIXTURES / name
    if not path.exists():
        msg = f"fixture {path} not found (GAITKD_FIXTURES={os.environ.get('GAITKD_FIXTURES', '<unset>')})"
        if _EXPLICIT:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def load_fixture(name: str) -> dict:
    """``torch.load`` a fixture file with ``weights_only=True``."""
    return torch.load(fixture_path(name), weights_only=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


# ----------------------------------------------------------------------------------- end-to-end runs (tiny preset)
@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make_cfg(out: Path, cache: Path, *overrides: str):
    """Compose like the command line; ``+preset=tiny`` goes last so it wins over the experiment's sizes."""
    student = [] if any(o.startswith("student=") for o in overrides) else ["student=gaitset_small"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[
            "data=synthetic", f"paths.output_dir={out}", f"paths.cache_dir={cache}",
            *student, *overrides, "+preset=tiny",
        ])
    return cfg


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory, cache_dir) -> Path:
    """A tiny trained GaitGL teacher checkpoint (2 steps) shared by the KD tests."""
    out = tmp_path_factory.mktemp("teacher")
    cfg = make_cfg(out, cache_dir, "+experiment=train_gaitgl", "student=gaitgl_narrow", "test=false")
    train(cfg)
    path = out / "checkpoints" / "last.ckpt"
    assert path.is_file()
    return path


def kd_overrides(ckpt: Path) -> list[str]:
    return ["+experiment=gaitgl_to_gaitset", "teacher=gaitgl_narrow", f"teacher.ckpt={ckpt}"]


@pytest.fixture(scope="session")
def gaitpart_ckpt(tmp_path_factory) -> Path:
    """A GaitPart teacher (conf/teacher/gaitpart.yaml, initial weights) saved as an OpenGait checkpoint file."""
    model = build_model(OmegaConf.load(CONF_DIR / "teacher" / "gaitpart.yaml").model, num_classes=0)
    path = tmp_path_factory.mktemp("gaitpart") / "GaitPart-0.pt"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return path


@pytest.fixture(scope="session")
def gaitbase_ckpt(tmp_path_factory) -> Path:
    """A GaitBase teacher at conf/teacher/gaitbase_lite.yaml's width (initial weights), for the tiny preset's
    training identities, saved as an OpenGait checkpoint file."""
    node = OmegaConf.load(CONF_DIR / "teacher" / "gaitbase.yaml").model
    node.channels = OmegaConf.load(CONF_DIR / "teacher" / "gaitbase_lite.yaml").model.channels
    model = build_model(node, num_classes=OmegaConf.load(CONF_DIR / "preset" / "tiny.yaml").data.synthetic.num_train)
    path = tmp_path_factory.mktemp("gaitbase") / "GaitBase-0.pt"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return path


def two_teacher_overrides(gaitgl: Path, gaitpart: Path) -> list[str]:
    """``+experiment=two_teachers`` at test size: the tiny GaitGL of ``teacher_ckpt`` plus a GaitPart."""
    return ["+experiment=two_teachers", "teacher=gaitgl_narrow", f"teacher.ckpt={gaitgl}",
            f"teachers.gaitpart.ckpt={gaitpart}"]


