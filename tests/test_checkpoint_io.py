"""Atomic checkpoint writes: a crash during a save leaves the previous checkpoint intact, and runs use them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from gaitkd import checkpoint_io
from gaitkd.checkpoint_io import AtomicCheckpointIO
from gaitkd.run import build


def test_a_crash_during_a_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "ckpts" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.arange(4.0)}, path)
    original = torch.save

    def dies_halfway(obj, handle):  # write part of the new file, then the process "dies"
        original(obj, handle)
        handle.truncate(handle.tell() // 2)
        raise KeyboardInterrupt("killed during the save")

    monkeypatch.setattr(checkpoint_io.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=True)
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, path, storage_options={"x": 1})


def test_runs_write_checkpoints_atomically(tmp_path: Path, cache_dir: Path) -> None:
    built = build(make_cfg(tmp_path, cache_dir, "+experiment=train_gaitset", "test=false"))
    assert isinstance(built.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    built.trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["global_step"] == built.trainer.global_step and any(k.startswith("student.") for k in
                                                                        state["state_dict"])
