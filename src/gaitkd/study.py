"""Ablation studies: one YAML file per study in ``experiments/``, run as one Hydra multirun.

A study file holds the base overrides (e.g. ``+experiment=gaitgl_to_gaitset``) and the swept values
(``sweep: {distill: [gaitkd, none], seed: [0, 1, 2]}``). ``gaitkd study FILE [OVERRIDES...]`` turns it into

    python -m gaitkd.run -m <base...> distill=gaitkd,none seed=0,1,2 hydra.sweep.dir=multirun/<study>/<time>

and runs it; extra overrides are appended, and one naming a swept or base key replaces that key (e.g.
``seed=0 distill=gaitkd,none`` for a two-job toy run). ``gaitkd report <sweep dir>`` then makes the table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gaitkd.errors import ConfigError

STUDY_KEYS = {"name", "description", "base", "sweep", "metrics"}


@dataclass(frozen=True)
class Study:
    """A parsed study file: ``base`` overrides, ``sweep`` key -> values, optional report ``metrics``."""

    name: str
    description: str
    base: tuple[str, ...]
    sweep: dict[str, tuple[str, ...]]
    metrics: tuple[str, ...] | None = None


def _value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return "null" if v is None else str(v)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; any problem is one ``ConfigError`` naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist (the studies are in experiments/*.yaml)")
    raw = OmegaConf.to_container(OmegaConf.load(path)) or {}
    if not isinstance(raw, dict) or set(raw) - STUDY_KEYS or "sweep" not in raw:
        raise ConfigError(f"{path}: a study is a mapping with keys {sorted(STUDY_KEYS)} ('sweep' required), "
                          f"got {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    sweep = raw["sweep"]
    if not isinstance(sweep, dict) or not sweep or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError(f"{path}: 'sweep' must map each config key to a non-empty list of values")
    base = raw.get("base") or []
    if not isinstance(base, list) or not all(isinstance(o, str) for o in base):
        raise ConfigError(f"{path}: 'base' must be a list of override strings")
    metrics = raw.get("metrics")
    return Study(
        name=str(raw.get("name") or path.stem),
        description=str(raw.get("description") or ""),
        base=tuple(base),
        sweep={str(k): tuple(_value(v) for v in vals) for k, vals in sweep.items()},
        metrics=tuple(metrics) if metrics else None,
    )


def override_key(override: str) -> str:
    """The config key an override sets: ``+a.b=1`` / ``++a.b=1`` / ``~a.b`` / ``a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def study_command(study: Study, overrides: list[str], sweep_dir: str | Path) -> list[str]:
    """The multirun command line: base, then the sweep, then the user's overrides (a user key replaces a base or
    swept one; order is kept otherwise, so ``+preset=`` given by the user still comes after ``+experiment=``)."""
    user = {override_key(o) for o in overrides}
    base = [o for o in study.base if override_key(o) not in user]
    swept = [f"{k}={','.join(v)}" for k, v in study.sweep.items() if k not in user]
    return [sys.executable, "-m", "gaitkd.run", "-m", *base, *swept, *overrides, f"hydra.sweep.dir={sweep_dir}"]


def default_sweep_dir(study: Study, root: Path) -> Path:
    return root / "multirun" / study.name / time.strftime("%Y-%m-%d_%H-%M-%S")


def run_study(path: str | Path, overrides: list[str], sweep_dir: str | Path | None = None,
              dry_run: bool = False, root: Path | None = None) -> tuple[list[str], Path]:
    """Run a study's multirun (or only build its command with ``dry_run``); returns (command, sweep dir)."""
    from gaitkd.run import REPO_ROOT

    study = load_study(path)
    out = Path(sweep_dir) if sweep_dir else default_sweep_dir(study, root or REPO_ROOT)
    cmd = study_command(study, list(overrides), out)
    if not dry_run:
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise ConfigError(f"study {study.name}: the multirun failed (exit {done.returncode}); command: "
                              f"{' '.join(cmd)}")
    return cmd, out
