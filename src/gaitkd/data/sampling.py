"""Frame sampling (OpenGait ``CollateFn`` sample types) and the train / eval collate functions.

Frame samplers return int64 frame indices into a sequence of ``length`` frames, drawn with a numpy ``Generator``
passed in (seeded per batch by :class:`gaitkd.data.sampler.SeededBatches`, so draws do not depend on the number of
workers). Silhouettes stay uint8 until the collate, which converts the whole batch once: ``float32(x) / 255`` is
bitwise equal to OpenGait's float64 ``x / 255`` cast to float32 for every uint8 value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info

from gaitkd.data.dataset import GaitDataError

FIXED_MODES = ("fixed_unordered", "fixed_ordered")
# Frame count drawn per sequence in [min, max]: such batches are packed along time (see collate_train).
UNFIXED_MODES = ("unfixed_unordered", "unfixed_ordered")
MODES = (*FIXED_MODES, *UNFIXED_MODES, "all_ordered")


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

    ``num_frames``/``skip`` apply to the ``fixed_*`` modes, ``limit`` to ``all_ordered``. The ``unfixed_*`` modes
    (OpenGait's ``frames_num_min`` / ``frames_num_max``) first draw the sequence's frame count uniformly in
    ``[min_frames, max_frames]`` from the same generator, then its frames as the ``fixed_*`` mode of that count.
    """

    mode: str
    num_frames: int = 30
    skip: int = 0
    limit: int | None = None
    min_frames: int | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"data.train_sample={self.mode!r} is not a frame-sampling mode; expected one of {MODES}")
        if self.mode in FIXED_MODES and self.num_frames < 1:
            raise ValueError(f"data.train_frames must be >= 1, got {self.num_frames}")
        bounds = (self.min_frames, self.max_frames)
        if self.packed and not (all(isinstance(b, int) for b in bounds) and 1 <= bounds[0] <= bounds[1]):
            raise ValueError(
                f"data.train_sample={self.mode} draws each sequence's frame count uniformly in "
                f"[data.train_frames_min, data.train_frames_max]: set both as integers with 1 <= min <= max, got "
                f"data.train_frames_min={self.min_frames}, data.train_frames_max={self.max_frames}"
            )
        if self.skip < 0:
            raise ValueError(f"data.frames_skip must be >= 0, got {self.skip}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.eval_frames_limit must be >= 1 or null, got {self.limit}")

    @property
    def packed(self) -> bool:
        """Whether sequences get different frame counts (batches are then packed along time, with ``seqL``)."""
        return self.mode in UNFIXED_MODES

    @property
    def clip_frames(self) -> int:
        """Frames the shortest clip this sampler draws spans: the ordered modes' window includes ``skip``."""
        if self.mode == "all_ordered":
            return 1
        count = self.min_frames if self.packed else self.num_frames
        return count + (self.skip if self.mode.endswith("_ordered") else 0)

    def require_frames(self, longest: int, where: str) -> None:
        """One :class:`GaitDataError` when even the longest training sequence (``longest`` frames, found ``where``)
        is shorter than every clip: each clip would then repeat frames (unordered) or wrap around (ordered)."""
        if self.clip_frames <= longest:
            return
        key = "data.train_frames_min" if self.packed else "data.train_frames"
        count = self.min_frames if self.packed else self.num_frames
        skip = f" + data.frames_skip={self.skip}" if self.skip and self.mode.endswith("_ordered") else ""
        raise GaitDataError(
            f"{key}={count}{skip} needs {self.clip_frames} frames per clip but the longest training sequence "
            f"{where} has {longest}, so every clip would repeat frames: lower {key}"
            f"{' (or data.frames_skip)' if skip else ''} to fit {longest} frames"
        )

    def __call__(self, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.mode == "all_ordered":
            return all_ordered(length, self.limit)
        if rng is None:
            raise ValueError(f"frame sampling mode {self.mode} needs a numpy Generator")
        count = int(rng.integers(self.min_frames, self.max_frames + 1)) if self.packed else self.num_frames
        if self.mode.endswith("_unordered"):
            return fixed_unordered(length, count, rng)
        return fixed_ordered(length, count, self.skip, rng)


def float_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor for a batch; inside a DataLoader worker it lives in shared memory already.

    A batch built in a worker travels to the training process through shared memory: allocating it there saves
    one copy of the whole batch (PyTorch's own default collate does the same). In the training process numpy
    allocates it: its allocator reuses the previous batch's pages, where ``torch.empty`` of tens of MB page-faults
    them in anew every batch.
    """
    if get_worker_info() is None:
        return torch.from_numpy(np.empty(shape, np.float32))
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)


def _to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 -> float32 ``x / 255`` in one single-threaded numpy pass, written straight into the batch tensor.

    numpy's float32 division is the same IEEE operation as torch's (bitwise equal to OpenGait's float64 division
    cast to float32) but several times faster here than ``torch.div`` with type promotion, and it does not
    compete for threads with the training process on a busy machine.
    """
    out = float_batch(frames.shape)
    np.divide(frames, np.float32(255), out=out.numpy(), dtype=np.float32)
    return out


def collate_frames(frames: Sequence[np.ndarray], packed: bool) -> dict[str, torch.Tensor]:
    """uint8 ``[T_b, H, W]`` sequences -> ``sils`` float32 in [0, 1], stacked or packed along time.

    Stacked (equal ``T``): ``{"sils": [N, T, H, W]}``. Packed (OpenGait's layout for variable lengths):
    ``{"sils": [1, ΣT, H, W], "seqL": int64 [N]}`` with ``seqL`` the frames per sequence.
    """
    if not packed:
        return {"sils": _to_float(np.stack(frames))}
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"sequences of one batch have different frame sizes {sorted(shapes)}")
    return {
        "sils": _to_float(np.concatenate(frames))[None],
        "seqL": torch.tensor([len(f) for f in frames], dtype=torch.int64),
    }


def collate_extra(rows: Sequence[tuple[np.ndarray, ...]], packed: bool) -> list[torch.Tensor]:
    """The extra modalities of a batch (``rows[b]``: sequence ``b``'s extra arrays ``[T_b, ...]``), dtype kept.

    One tensor per modality, laid out like ``sils``: ``[N, T, ...]`` stacked or ``[1, ΣT, ...]`` packed.
    """
    join = (lambda arrays: np.concatenate(arrays)[None]) if packed else np.stack
    return [torch.from_numpy(join(column)) for column in zip(*rows)]


def _batch(frames: dict[str, torch.Tensor], rows: Sequence[tuple[np.ndarray, ...]], packed: bool, **ids) -> dict:
    batch = {**frames, **{k: torch.tensor(v, dtype=torch.int64) for k, v in ids.items()}}
    extra = collate_extra(rows, packed)
    if extra:
        batch["extra"] = extra
    return batch


def collate_train(items: Sequence[tuple], packed: bool = False) -> dict[str, torch.Tensor]:
    """Training samples ``(frames uint8 [T, H, W], class index, dataset index, *extra modalities)`` -> a batch.

    Returns ``sils`` float32 in [0, 1] (``[N, T, H, W]``, or with ``packed`` ``[1, ΣT, H, W]`` plus ``seqL``
    int64 ``[N]``; see :func:`collate_frames`), ``labels`` int64 ``[N]``, ``index`` int64 ``[N]``, and when the
    samples carry extra modalities ``extra`` (see :func:`collate_extra`).
    """
    batch = collate_frames([item[0] for item in items], packed)
    labels, index = [item[1] for item in items], [item[2] for item in items]
    return _batch(batch, [item[3:] for item in items], packed, labels=labels, index=index)


def collate_eval(items: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """Pack variable-length sequences ``(frames uint8 [T_b, H, W], dataset index, *extra)`` along time, OpenGait-style.

    Returns ``sils`` float32 ``[1, ΣT, H, W]``, ``seqL`` int64 ``[B]`` (frames per sequence), ``index`` int64 ``[B]``
    (and ``extra``, packed the same way, when the items carry extra modalities).
    """
    batch = collate_frames([item[0] for item in items], packed=True)
    return _batch(batch, [item[2:] for item in items], True, index=[item[1] for item in items])
