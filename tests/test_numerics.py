"""Non-finite losses: stop naming the component and step (default), or skip the step, counted and bounded."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import make_cfg
from gaitkd.losses import TripletLoss
from gaitkd.numerics import NonFiniteGuard, NonFiniteLossError, nonfinite_terms
from gaitkd.run import build, main, train


def test_nonfinite_terms_names_each_bad_component() -> None:
    ok, nan, inf = torch.tensor(1.0), torch.tensor([0.5, float("nan")]), torch.tensor(float("inf"))
    assert nonfinite_terms({"triplet": (1.0, ok), "ce": (1.0, ok)}) == []
    assert nonfinite_terms({"triplet": (1.0, nan), "ce": (1.0, ok), "teacher/boundary_kd": (0.003, inf)}) == [
        "triplet", "teacher/boundary_kd"]
    with pytest.raises(ValueError, match="loss.on_nonfinite"):
        NonFiniteGuard("ignore")
    guard = NonFiniteGuard("skip", max_skipped=2)
    assert guard.skip({"ce": (1.0, nan)}, 0) and guard.skip({"ce": (1.0, nan)}, 1)
    with pytest.raises(NonFiniteLossError, match="3 steps skipped"):
        guard.skip({"ce": (1.0, nan)}, 2)


def _nan_first_calls(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """The triplet loss returns NaN on its first ``calls`` calls (as a diverged step would)."""
    original, seen = TripletLoss.forward, []

    def forward(self, **kwargs):
        loss, info = original(self, **kwargs)
        seen.append(1)
        return (loss * float("nan") if len(seen) <= calls else loss), info

    monkeypatch.setattr(TripletLoss, "forward", forward)


def test_nonfinite_loss_stops_the_run_naming_component_and_step(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_first_calls(monkeypatch, 1)
    cfg = make_cfg(tmp_path, cache_dir, "+experiment=train_gaitset", "test=false")
    with pytest.raises(NonFiniteLossError, match=r"step 0: non-finite loss \(triplet=nan\)"):
        train(cfg)


def test_nonfinite_step_is_skipped_without_update(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    _nan_first_calls(monkeypatch, 1)
    cfg = make_cfg(tmp_path, cache_dir, "+experiment=train_gaitset", "test=false", "loss.on_nonfinite=skip",
                   "trainer.max_steps=2")
    built = build(cfg)
    snaps = [{k: v.clone() for k, v in built.module.student.state_dict().items()}]

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            snaps.append({k: v.clone() for k, v in module.student.state_dict().items()})

    built.trainer.callbacks.append(Snapshot())
    built.trainer.fit(built.module, datamodule=built.datamodule)
    assert built.module.nonfinite.skipped == 1 and built.trainer.global_step == 2  # skipped steps count
    assert all(torch.equal(v, snaps[0][k]) for k, v in snaps[1].items())  # the NaN step changed nothing
    assert any(not torch.equal(v, snaps[1][k]) for k, v in snaps[2].items())  # the finite one trained


def test_cli_reports_a_diverged_run_in_one_line(tmp_path: Path, cache_dir: Path, monkeypatch, capsys) -> None:
    _nan_first_calls(monkeypatch, 10**6)
    monkeypatch.setattr("sys.argv", ["gaitkd.run", "data=synthetic", "+experiment=train_gaitset",
                                     "student=gaitset_small", f"paths.cache_dir={cache_dir}", "+preset=tiny",
                                     "test=false", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "gaitkd: error: step 0: non-finite loss (triplet=nan)" in capsys.readouterr().err
