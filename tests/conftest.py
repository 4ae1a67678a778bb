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
