"""Resuming a run exactly: which checkpoint to resume from, and the random-number state saved with it.

Lightning restores the model, optimizer, scheduler and loop progress; the training loader's position is restored by
:class:`gaitkd.data.GaitDataModule` (``state_dict``). What is left is the global RNGs (Python, NumPy, torch) that a
user's model may draw from (dropout, stochastic depth): :func:`capture_rng` goes into each checkpoint as plain
tensors and ints (loadable with ``weights_only=True``) and :func:`restore_rng` puts them back when training starts.

``ckpt_path`` (config): ``null`` starts fresh unless ``resume=auto`` finds ``<output_dir>/checkpoints/last.ckpt`` or
a newer SLURM requeue checkpoint ``<output_dir>/hpc_ckpt_<n>.ckpt`` (re-running a job in the same run folder, e.g. a
requeued SLURM job, continues it); ``last`` means ``checkpoints/last.ckpt`` and it must exist; any other value is a
checkpoint path.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaitkd.errors import ConfigError

LAST = Path("checkpoints") / "last.ckpt"
RESUME_MODES = ("auto", "never")


def resolve_ckpt_path(ckpt_path: str | None, resume: str, output_dir: str | Path) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from (see the module docstring), or ``None`` for a fresh run."""
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume={resume!r} is not a resume mode; use one of {RESUME_MODES}")
    last = Path(output_dir) / LAST
    if ckpt_path == "last":
        if not last.is_file():
            raise ConfigError(
                f"ckpt_path=last but {last} does not exist; point hydra.run.dir (or paths.output_dir) at the folder "
                "of the run to continue, or give ckpt_path=PATH"
            )
        return str(last)
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give an existing Lightning checkpoint")
        return str(ckpt_path)
    if resume == "never":
        return None
    # the newest of last.ckpt and Lightning's SLURM requeue checkpoints (hpc_ckpt_<n>.ckpt in the run folder)
    found = [p for p in (last, *Path(output_dir).glob("hpc_ckpt_*.ckpt")) if p.is_file()]
    return str(max(found, key=lambda p: p.stat().st_mtime_ns)) if found else None


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, when initialised, CUDA) RNG states as tensors / ints."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": (version, torch.tensor(mt, dtype=torch.int64), gauss),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
