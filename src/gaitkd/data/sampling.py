"""Frame sampling (OpenGait ``CollateFn`` sample types) and the train / eval collate functions.

Frame samplers return int64 frame indices into a sequence of ``length`` frames, drawn with a numpy ``Generator``
passed in (seeded per batch by :class:`gaitkd.data.sampler.SeededBatches`, so draws do not depend on the number of
workers). Silhouettes stay uint8 until the collate, which converts once in torch: ``float32(x) / 255`` is bitwise
equal to OpenGait's float64 ``x / 255`` cast to float32 for every uint8 value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

MODES = ("fixed_unordered", "fixed_ordered", "all_ordered")


def fixed_unordered(length: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``num_frames`` random frames in random order; without replacement when ``length >= num_frames``."""
    if length >= num_frames:
        return rng.choice(length, num_frames, replace=False)
    return rng.integers(0, length, num_frames)


def fixed_ordered(length: int, num_frames: int, skip: int, rng: np.random.Generator) -> np.ndarray:
    """``num_frames`` sorted random frames inside a random contiguous window of ``num_frames + skip`` frames.

    A sequence shorter than the window is tiled (OpenGait's behaviour), so indices are taken modulo ``length``
    and may wrap around (e.g. ``[8, 9, 0, 1]``) while being increasing positions in the tiled sequence.
    """
    window = num_frames + skip
    tiled = length * -(-window // length)  # ceil to whole repetitions
    start = rng.integers(0, tiled - window + 1)
    picked = np.sort(rng.choice(window, num_frames, replace=False))
    return (start + picked) % length


def all_ordered(length: int, limit: int | None = None) -> np.ndarray:
    """Every frame in order, truncated to the first ``limit`` (OpenGait's ``frames_all_limit``)."""
    return np.arange(length if limit is None else min(length, limit))


@dataclass(frozen=True)
class FrameSampler:
    """A configured sampling mode: ``sampler(length, rng) -> int64 indices``.

    ``num_frames``/``skip`` apply to the ``fixed_*`` modes, ``limit`` to ``all_ordered``.
    """

    mode: str
    num_frames: int = 30
    skip: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"data.train_sample={self.mode!r} is not a frame-sampling mode; expected one of {MODES}")
        if self.mode != "all_ordered" and self.num_frames < 1:
            raise ValueError(f"data.train_frames must be >= 1, got {self.num_frames}")
        if self.skip < 0:
            raise ValueError(f"data.frames_skip must be >= 0, got {self.skip}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.eval_frames_limit must be >= 1 or null, got {self.limit}")

    def __call__(self, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.mode == "all_ordered":
            return all_ordered(length, self.limit)
        if rng is None:
            raise ValueError(f"frame sampling mode {self.mode} needs a numpy Generator")
        if self.mode == "fixed_unordered":
            return fixed_unordered(length, self.num_frames, rng)
        return fixed_ordered(length, self.num_frames, self.skip, rng)


_255 = torch.tensor(255.0, dtype=torch.float32)


def _to_float(frames: np.ndarray) -> torch.Tensor:
    # One fused kernel: uint8 / float32 0-dim tensor promotes to float32 whatever the default dtype.
    return torch.div(torch.from_numpy(frames), _255)


def collate_train(items: Sequence[tuple[np.ndarray, int, int]]) -> dict[str, torch.Tensor]:
    """Stack fixed-length samples ``(frames uint8 [T, H, W], class index, dataset index)``.

    Returns ``sils`` float32 ``[N, T, H, W]`` in [0, 1], ``labels`` int64 ``[N]``, ``index`` int64 ``[N]``.
    """
    frames, labels, index = zip(*items)
    return {
        "sils": _to_float(np.stack(frames)),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "index": torch.tensor(index, dtype=torch.int64),
    }


def collate_eval(items: Sequence[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
    """Pack variable-length sequences ``(frames uint8 [T_b, H, W], dataset index)`` along time, OpenGait-style.

    Returns ``sils`` float32 ``[1, ΣT, H, W]``, ``seqL`` int64 ``[B]`` (frames per sequence), ``index`` int64 ``[B]``.
    """
    frames, index = zip(*items)
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"sequences of one evaluation batch have different frame sizes {sorted(shapes)}")
    return {
        "sils": _to_float(np.concatenate(frames))[None],
        "seqL": torch.tensor([len(f) for f in frames], dtype=torch.int64),
        "index": torch.tensor(index, dtype=torch.int64),
    }
