"""Resuming a run: same final weights and metrics as an uninterrupted run of the same seed (issue 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from conftest import make_cfg
from gaitkd.errors import ConfigError
from gaitkd.resume import capture_rng, resolve_ckpt_path, restore_rng
from gaitkd.run import train

STEPS = 5  # the tiny preset has 2 batches per epoch: 5 steps span three epochs


DRAWS: dict[int, float] = {}  # global step -> a torch draw at its start (see RecordDraws)


class RecordDraws(L.Callback):
    """Draws from torch's global RNG at each step start, as a model with dropout would."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        DRAWS[trainer.global_step] = float(torch.rand(()))


def _run(out: Path, cache: Path, steps: int, *extra: str) -> dict:
    cfg = make_cfg(out, cache, f"trainer.max_steps={steps}", "optimizer.lr=0.05", *extra)
    cfg.callbacks = OmegaConf.create({"draws": {"_target_": f"{__name__}.RecordDraws"}})
    return train(cfg)


def _student(out: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("student.")}


def _floats(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and "seconds" not in k and "ms" not in k}


@pytest.mark.parametrize("stop", [3, 4], ids=["mid_epoch", "epoch_boundary"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, cache_dir, stop):
    DRAWS.clear()
    whole = _run(tmp_path / "whole", cache_dir, STEPS)
    whole_draws = dict(DRAWS)
    _run(tmp_path / "split", cache_dir, stop, "test=false")
    resumed = _run(tmp_path / "split", cache_dir, STEPS)  # same folder: resume=auto picks up last.ckpt
    assert DRAWS == whole_draws  # the RNG goes on as in the uninterrupted run (steps >= stop were overwritten)
    assert resumed["resumed_from"].endswith("last.ckpt")
    a, b = _student(tmp_path / "whole"), _student(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert _floats(whole) == _floats(resumed)
    assert json.loads((tmp_path / "split" / "metrics.json").read_text())["resumed_from"]


def test_same_seed_same_metrics(tmp_path, cache_dir):
    first = _run(tmp_path / "a", cache_dir, 3)
    second = _run(tmp_path / "b", cache_dir, 3)
    assert _floats(first) == _floats(second) and "NM" in " ".join(_floats(first))


def test_ckpt_path_last_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=last"):
        resolve_ckpt_path("last", "auto", tmp_path)
    with pytest.raises(ConfigError, match="ckpt_path=.*does not exist"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), "auto", tmp_path)
    with pytest.raises(ConfigError, match="resume="):
        resolve_ckpt_path(None, "always", tmp_path)
    assert resolve_ckpt_path(None, "auto", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path(None, "auto", tmp_path).endswith("last.ckpt")
    assert resolve_ckpt_path(None, "never", tmp_path) is None
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # a SLURM requeue checkpoint written after last.ckpt wins
    hpc.write_bytes(b"x")
    os.utime(hpc, ns=(2**62, 2**62))
    assert resolve_ckpt_path(None, "auto", tmp_path) == str(hpc)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.save(capture_rng(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


# ------------------------------------------------------------------------------------------ a real SIGKILL mid-run
DRIVER = '''
import os, signal, sys
sys.path.insert(0, {tests!r})
import lightning as L
from omegaconf import OmegaConf
from conftest import make_cfg
from gaitkd.run import train


class KillAt(L.Callback):
    """SIGKILL this process when step `step` is about to start (no clean-up, as an OOM kill or pre-emption)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


out, cache, steps, kill = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = make_cfg(out, cache, f"trainer.max_steps={{steps}}", "optimizer.lr=0.05")
cfg.callbacks = OmegaConf.create({{
    "ckpt": {{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": out + "/checkpoints",
             "save_last": True, "save_top_k": 0, "every_n_train_steps": 3}},
    "kill": {{"_target_": "__main__.KillAt", "step": kill}},
}})
train(cfg)
'''


def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, cache_dir):
    import subprocess
    import sys

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    steps = 7  # checkpoints after steps 3 and 6 (2 batches per epoch: 3 is mid-epoch); killed before step 5

    def run(out: str, kill: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(driver), str(tmp_path / out), str(cache_dir), str(steps), str(kill)],
                              capture_output=True, text=True, timeout=600)

    whole = run("whole", -1)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run("killed", 5)
    assert killed.returncode == -9, killed.stderr[-3000:]  # died by SIGKILL: steps 4-5 are lost, redone on resume
    assert not (tmp_path / "killed" / "metrics.json").exists()
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    resumed = run("killed", -1)  # the same command again: resume=auto continues from checkpoints/last.ckpt
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _student(tmp_path / "whole"), _student(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    m_whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    m_resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert m_resumed["resumed_from"].endswith("last.ckpt")
    assert _floats(m_whole) == _floats(m_resumed)
