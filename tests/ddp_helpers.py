"""Test-only pieces the multi-process runs load by ``_target_`` (the ranks are separate ``python -m gaitkd.run``
processes, so a monkeypatch cannot reach them): a student that goes NaN on one rank, a callback that records what
every rank saw."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch.distributed as dist

from gaitkd.models import GaitSet
from gaitkd.models.output import GaitOutput


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class NaNOnRankGaitSet(GaitSet):
    """GaitSet whose training forwards number ``nan_calls`` (counted from 0) return NaN on rank ``nan_rank`` only."""

    def __init__(self, nan_rank: int = 1, nan_calls: tuple[int, ...] = (1,), **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_rank, self.nan_calls, self.calls = nan_rank, set(nan_calls), 0

    def forward(self, sils, seqL=None) -> GaitOutput:
        out = super().forward(sils, seqL)
        if not self.training:
            return out
        self.calls += 1
        if _rank() == self.nan_rank and self.calls - 1 in self.nan_calls:
            out = out.map(lambda t: t * float("nan"))
        return out


class RecordBatches(L.Callback):
    """Writes ``<out>/batches.rank<r>.json``: the training labels and test indices of every step on rank r, and at
    the end of fitting the skipped-step count and a checksum of the student's weights."""

    def __init__(self, out: str) -> None:
        self.out, self.seen = Path(out), {"train": [], "test": []}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.seen["train"].append(batch["labels"].tolist())

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen["test"].append(batch["index"].tolist())

    def on_train_end(self, trainer, module) -> None:
        self.seen["skipped"] = module.nonfinite.skipped
        self.seen["checksum"] = sum(float(p.double().sum()) for p in module.student.parameters())
        self._dump()

    def on_test_end(self, trainer, module) -> None:
        self._dump()

    def _dump(self) -> None:
        (self.out / f"batches.rank{_rank()}.json").write_text(json.dumps(self.seen))
