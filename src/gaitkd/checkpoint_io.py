"""Checkpoint writes that a crash cannot half-finish: write a temporary file beside the target, fsync, rename.

Lightning's ``TorchCheckpointIO`` serialises to memory and then writes the target file in place, so a kill during
that write leaves a truncated checkpoint where the previous good one was. ``os.replace`` is atomic on POSIX
filesystems: the target is either the old file or the complete new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _ON_SAVED_DEVICE(storage: Any, location: str) -> Any:  # noqa: N802 - TorchCheckpointIO's default map_location
    return storage


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic (local paths) and whose loads are ``weights_only`` by default."""

    def load_checkpoint(self, path: Any, map_location: Any = _ON_SAVED_DEVICE,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Resume checkpoints hold tensors and plain containers only: load them without unpickling code."""
        return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None):
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # only left when the write failed
