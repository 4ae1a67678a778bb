"""Training augmentations of whole silhouette sequences (OpenGait's ``opengait/data/transform.py`` set), batched.

Owns :class:`SequenceAugment` (flip / rotate / perspective / erase with one random draw per *sequence*, vectorised
over the batch in torch), :func:`build_augment` (the ``data.augment`` config block) and :class:`TrainCollate`
(the training collate that augments with a generator derived from the batch's item seeds).

Augmentation happens once per batch in the data pipeline, before the batch reaches the LightningModule, which feeds
the same ``batch["sils"]`` tensor to the student and to the teacher: both always see identical augmented input.

Differences from OpenGait (same distributions, not bitwise the same pixels): warps use ``grid_sample`` (bilinear,
zero padding) instead of cv2, and the transforms run in a fixed order (perspective, flip, rotate, erase) on the
already width-cut ``[H, W]`` frames. OpenGait's rotation centre ``(h // 2, w // 2)`` given to cv2 as ``(x, y)``
(swapped) is kept, as is its perspective corner jitter ``int(w // 44) * 10`` px.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gaitkd.data.sampling import collate_train

# Attempts at drawing an erasing rectangle that fits the frame (OpenGait tries 100 times, then leaves it as is).
ERASE_ATTEMPTS = 100
# Mixed into the batch's item seeds so the augmentation stream is independent of the frame-sampling streams.
_AUGMENT_STREAM = 0x6175676D


@dataclass(frozen=True)
class SequenceAugment:
    """Random sequence-level augmentations; every probability is per sequence and 0 disables that transform.

    Args:
        hflip: probability of a horizontal flip (OpenGait ``RandomHorizontalFlip``).
        rotate / rotate_degree: probability and max absolute angle (uniform in ``[-deg, deg]``) of a rotation
            (``RandomRotate``).
        perspective: probability of a perspective warp mapping a quad with corners jittered inwards by up to
            ``int(w // 44) * 10`` px horizontally onto the full frame (``RandomPerspective``).
        erase / erase_sl / erase_sh / erase_r1: probability of zeroing one rectangle of area fraction uniform in
            ``[sl, sh]`` and aspect ratio uniform in ``[r1, 1 / r1]`` (``RandomErasing``, ``per_frame=False``).

    ``augment(sils [N, T, H, W], generator) -> [N, T, H, W]``: each sequence gets its own draw, shared by all its
    frames. Packed batches ``augment(sils [1, ΣT, H, W], generator, seqL [N]) -> [1, ΣT, H, W]`` get the same
    draws as ``N`` stacked sequences would. With every probability 0 the input tensor itself is returned and no
    random number is drawn.
    """

    hflip: float = 0.0
    rotate: float = 0.0
    rotate_degree: float = 10.0
    perspective: float = 0.0
    erase: float = 0.0
    erase_sl: float = 0.05
    erase_sh: float = 0.2
    erase_r1: float = 0.3

    def __post_init__(self) -> None:
        for name in ("hflip", "rotate", "perspective", "erase"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"data.augment.{name} is a probability in [0, 1], got {value}")
        if self.rotate_degree < 0:
            raise ValueError(f"data.augment.rotate_degree must be >= 0, got {self.rotate_degree}")
        if not 0.0 < self.erase_sl <= self.erase_sh <= 1.0:
            raise ValueError(f"data.augment needs 0 < erase_sl <= erase_sh <= 1, got {self.erase_sl}, {self.erase_sh}")
        if not 0.0 < self.erase_r1 <= 1.0:
            raise ValueError(f"data.augment.erase_r1 must be in (0, 1], got {self.erase_r1}")

    @property
    def active(self) -> bool:
        """Whether any transform can fire (otherwise the augmentation is the identity)."""
        return any(p > 0 for p in (self.hflip, self.rotate, self.perspective, self.erase))

    def __call__(self, sils: Tensor, generator: torch.Generator | None = None, seqL: Tensor | None = None) -> Tensor:
        """Augment ``sils`` float ``[N, T, H, W]`` in [0, 1] -> new ``[N, T, H, W]`` tensor (input untouched).

        With ``seqL`` (int ``[N]``), ``sils`` is packed ``[1, ΣT, H, W]`` and so is the result.
        """
        if not self.active:
            return sils
        if seqL is not None:
            return self._packed(sils, torch.as_tensor(seqL), generator)
        if sils.dim() != 4:
            raise ValueError(f"SequenceAugment expects silhouettes [N, T, H, W], got shape {tuple(sils.shape)}")
        out = sils.clone()
        n, _, h, w = out.shape
        if self.perspective > 0:
            picked = _chance(n, self.perspective, generator)
            _warp_picked(out, picked, perspective_matrices(n, h, w, generator))
        if self.hflip > 0:
            picked = _chance(n, self.hflip, generator)
            out[picked] = out[picked].flip(-1)
        if self.rotate > 0:
            picked = _chance(n, self.rotate, generator)
            angles = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * self.rotate_degree
            _warp_picked(out, picked, rotation_matrices(angles, h, w))
        if self.erase > 0:
            picked = _chance(n, self.erase, generator)
            erased = erase_masks(n, h, w, self.erase_sl, self.erase_sh, self.erase_r1, generator)
            out.masked_fill_((erased & picked[:, None, None])[:, None], 0.0)
        return out

    def _packed(self, sils: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        """Packed ``[1, ΣT, H, W]``: zero-padded to ``[N, max T, H, W]``, augmented, padding dropped again.

        The stacked path keeps each sequence's frames as ``grid_sample`` channels (one sampling grid per sequence,
        bilinear weights shared by its frames), which is cheaper than a grid per frame; the padding costs
        ``max T / mean T`` in memory. Padded frames never influence real ones: every transform is per frame.
        """
        if sils.dim() != 4 or sils.shape[0] != 1 or sils.shape[1] != int(lengths.sum()):
            raise ValueError(
                f"SequenceAugment with seqL expects packed silhouettes [1, sum(seqL)={int(lengths.sum())}, H, W], "
                f"got shape {tuple(sils.shape)}"
            )
        valid = torch.arange(int(lengths.max()))[None] < lengths[:, None]  # [N, max T]
        padded = sils.new_zeros((len(lengths), valid.shape[1], *sils.shape[2:]))
        padded[valid] = sils[0]
        return self(padded, generator)[valid][None]


def _chance(n: int, prob: float, generator: torch.Generator | None) -> Tensor:
    """Bool ``[N]``: which sequences get a transform of probability ``prob`` (OpenGait: ``uniform < prob``)."""
    return torch.rand(n, generator=generator) < prob


def rotation_matrices(degrees: Tensor, h: int, w: int) -> Tensor:
    """Output->input pixel maps ``[N, 3, 3]`` (float64) of cv2 rotations by ``degrees [N]`` (counter-clockwise).

    The centre is OpenGait's ``cv2.getRotationMatrix2D((h // 2, w // 2), ...)``, i.e. x = h // 2, y = w // 2.
    """
    cx, cy = float(h // 2), float(w // 2)
    rad = torch.deg2rad(degrees.to(torch.float64))
    a, b = torch.cos(rad), torch.sin(rad)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    forward = torch.stack(  # cv2's input->output matrix; warpAffine samples through its inverse
        [
            torch.stack([a, b, (1 - a) * cx - b * cy], -1),
            torch.stack([-b, a, b * cx + (1 - a) * cy], -1),
            torch.stack([zero, zero, one], -1),
        ],
        1,
    )
    return torch.linalg.inv(forward)


def perspective_matrices(n: int, h: int, w: int, generator: torch.Generator | None = None) -> Tensor:
    """Output->input pixel homographies ``[N, 3, 3]`` (float64) of OpenGait's ``RandomPerspective``.

    Source corners TL=(l0, 0), TR=(r0, 0), BR=(r1, h), BL=(l1, h) with ``l* in [0, c)``, ``r* in [w - c, w)`` integers,
    ``c = int(w // 44) * 10`` (at least 1: OpenGait fails on frames narrower than 44 px), are mapped onto the canvas
    corners ``(0, 0), (w, 0), (w, h), (0, h)``.
    """
    cut = max(int(w // 44) * 10, 1)
    jitter = torch.randint(0, cut, (n, 4), generator=generator).to(torch.float64)
    src_x = torch.stack([jitter[:, 0], w - 1 - jitter[:, 1], w - 1 - jitter[:, 2], jitter[:, 3]], 1)  # TL TR BR BL
    src = torch.stack([src_x, torch.tensor([0.0, 0.0, h, h], dtype=torch.float64).expand(n, 4)], -1)
    dst = torch.tensor([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], dtype=torch.float64).expand(n, 4, 2)
    return homographies(dst, src)


def homographies(src: Tensor, dst: Tensor) -> Tensor:
    """3x3 matrices ``[N, 3, 3]`` mapping the four points ``src [N, 4, 2]`` onto ``dst [N, 4, 2]`` (h33 = 1)."""
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    coeffs = torch.linalg.solve(torch.cat([rows_u, rows_v], 1), torch.cat([u, v], 1))
    return torch.cat([coeffs, torch.ones_like(coeffs[:, :1])], 1).view(-1, 3, 3)


def _warp_picked(sils: Tensor, picked: Tensor, out_to_in: Tensor) -> None:
    """In place: warp the sequences of ``sils [N, T, H, W]`` selected by bool ``picked [N]``."""
    if picked.any():
        sils[picked] = warp(sils[picked], out_to_in[picked])


def warp(sils: Tensor, out_to_in: Tensor) -> Tensor:
    """Warp every sequence of ``sils [N, T, H, W]`` (in [0, 1]) by its pixel map ``out_to_in [N, 3, 3]`` -> same shape.

    One sampling grid per sequence, shared by its T frames (frames are ``grid_sample`` channels). Pixel (x, y) of
    the output reads the input at ``out_to_in @ (x, y, 1)`` (pixel-centre coordinates, as cv2's warps), bilinear,
    zeros outside.
    """
    _, _, h, w = sils.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)]).view(3, -1)  # [3, H*W]
    mapped = out_to_in.to(torch.float64) @ pixels  # [N, 3, H*W]
    xy = mapped[:, :2] / mapped[:, 2:]
    scale = torch.tensor([w, h], dtype=torch.float64)[:, None]
    grid = ((2 * xy + 1) / scale - 1).transpose(1, 2).reshape(-1, h, w, 2)  # align_corners=False pixel centres
    warped = F.grid_sample(sils, grid.to(sils.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.clamp_(0.0, 1.0)  # bilinear weights are convex: the clamp only removes float round-off


def erase_masks(
    n: int, h: int, w: int, sl: float, sh: float, r1: float, generator: torch.Generator | None = None
) -> Tensor:
    """Bool masks ``[N, H, W]``, True inside one random rectangle per sequence (OpenGait ``RandomErasing``).

    Each of ``ERASE_ATTEMPTS`` tries draws area ``uniform(sl, sh) * H * W`` and aspect ``uniform(r1, 1 / r1)``,
    ``rh = round(sqrt(area * aspect))``, ``rw = round(sqrt(area / aspect))``; the first try with ``rh < H`` and
    ``rw < W`` wins and its top-left corner is uniform over the positions that fit. No fitting try: nothing erased.
    """
    area = (sl + (sh - sl) * torch.rand(n, ERASE_ATTEMPTS, generator=generator, dtype=torch.float64)) * (h * w)
    aspect = r1 + (1 / r1 - r1) * torch.rand(n, ERASE_ATTEMPTS, generator=generator, dtype=torch.float64)
    rh = torch.sqrt(area * aspect).round().long()
    rw = torch.sqrt(area / aspect).round().long()
    fits = (rh < h) & (rw < w)
    first = fits.long().argmax(1, keepdim=True)  # first fitting attempt (0 when none fits; masked out below)
    rh, rw = rh.gather(1, first)[:, 0], rw.gather(1, first)[:, 0]
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = (corner[:, 0] * (h - rh + 1)).long()
    left = (corner[:, 1] * (w - rw + 1)).long()
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + rh)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + rw)[:, None, None]))
    return inside & fits.any(1)[:, None, None]


def build_augment(cfg: dict | None) -> SequenceAugment | None:
    """``data.augment`` block -> :class:`SequenceAugment`, or ``None`` when absent or all probabilities are 0."""
    if not cfg:
        return None
    known = {f.name for f in fields(SequenceAugment)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"data.augment has unknown keys {unknown}; expected a subset of {sorted(known)}")
    augment = SequenceAugment(**{k: float(v) for k, v in cfg.items()})
    return augment if augment.active else None


def batch_generator(seeds: Sequence[int]) -> torch.Generator:
    """A torch generator seeded from a batch's item seeds (see :class:`gaitkd.data.sampler.SeededBatches`).

    The item seeds derive from ``(seed, epoch, rank, step)``, so augmentation is reproducible and independent of
    the number of DataLoader workers, like frame sampling.
    """
    state = np.random.SeedSequence([_AUGMENT_STREAM, *(int(s) for s in seeds)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class TrainCollate:
    """Training collate: items ``(frames uint8 [T, H, W], class, index, seed, *extra)`` -> :func:`collate_train` batch.

    ``packed``: sequences of different lengths (``unfixed_*`` sampling) are packed along time with ``seqL``. With an
    augmentation, ``sils`` is augmented once here (one draw per sequence, packed or not), so student and teacher
    (which both read ``batch["sils"]``) see the same augmented sequences. Extra modalities are not augmented.
    Evaluation never goes through this collate.
    """

    def __init__(self, augment: SequenceAugment | None = None, packed: bool = False) -> None:
        self.augment = augment if augment is not None and augment.active else None
        self.packed = packed

    def __call__(self, items: Sequence[tuple]) -> dict[str, Tensor]:
        batch = collate_train([(*item[:3], *item[4:]) for item in items], self.packed)
        if self.augment is not None:
            generator = batch_generator([item[3] for item in items])
            batch["sils"] = self.augment(batch["sils"], generator, batch.get("seqL"))
        return batch

