"""Small building blocks shared by the gait models (OpenGait-compatible semantics and parameter names).

Layout convention (as OpenGait): sequence feature maps are ``[n, c, s, h, w]`` (s = frames). With variable-length
input the sequences are packed along time, ``n == 1`` and ``seqL`` lists the per-sequence frame counts.
Attribute names (``conv``, ``conv3d``, ``forward_block``, ``fc_bin``, ``p``, ``bn1d``) equal OpenGait's so that
OpenGait state_dicts load 1:1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SeqL = Tensor | Sequence[int] | Sequence[Sequence[int]] | None


def seq_lengths(seqL: SeqL) -> list[int] | None:
    """Normalise ``seqL`` to a plain list of per-sequence frame counts.

    Accepts ``None``, a list / 1-D tensor ``[N]``, or OpenGait's batched form ``[[T_1, ..., T_N]]`` / ``[1, N]``.
    """
    if seqL is None:
        return None
    lengths = seqL.tolist() if isinstance(seqL, Tensor) else list(seqL)
    if len(lengths) == 1 and isinstance(lengths[0], (list, tuple)):
        lengths = list(lengths[0])
    try:
        lengths = [int(t) for t in lengths]
    except TypeError as err:
        raise ValueError(f"seqL must be a flat list / 1-D tensor of frame counts or [[...]], got {seqL!r}") from err
    if not lengths or min(lengths) < 1:
        raise ValueError(f"seqL must hold at least one sequence and only positive frame counts, got {lengths}")
    return lengths


def check_packed(sils: Tensor, lengths: list[int] | None) -> None:
    """Validate ``sils [N, T, H, W]`` against ``seqL`` (packed input must be ``[1, sum(seqL), H, W]``)."""
    if sils.dim() != 4:
        raise ValueError(f"sils must be [N, T, H, W], got shape {tuple(sils.shape)}")
    if lengths is not None and (sils.shape[0] != 1 or sils.shape[1] != sum(lengths)):
        raise ValueError(
            f"with seqL the input must be packed as [1, sum(seqL)={sum(lengths)}, H, W], got {tuple(sils.shape)}"
        )


def pad_packed(x: Tensor, lengths: list[int]) -> tuple[Tensor, Tensor]:
    """Unpack ``[1, c, sum(seqL), ...]`` into ``[N, c, L_max, ...]`` plus a ``valid [N, L_max]`` bool mask.

    Shorter sequences are padded by repeating their last frame: harmless for a max, anything else must use the mask.
    """
    if x.shape[0] != 1 or x.shape[2] != sum(lengths):
        raise ValueError(f"packed features must be [1, c, sum(seqL)={sum(lengths)}, ...], got {tuple(x.shape)}")
    lens = torch.tensor(lengths, device=x.device)
    starts = torch.cumsum(lens, 0) - lens
    steps = torch.arange(int(lens.max()), device=x.device)
    index = starts[:, None] + torch.minimum(steps[None], lens[:, None] - 1)  # [N, L_max]
    frames = x[0].index_select(1, index.reshape(-1)).unflatten(1, index.shape)  # [c, N, L_max, ...]
    return frames.movedim(1, 0), steps[None] < lens[:, None]


def temporal_max(x: Tensor, seqL: SeqL = None) -> Tensor:
    """Max over time (dim 2): ``[n, c, s, ...] -> [n, c, ...]``; with ``seqL``: ``[1, c, sum, ...] -> [N, c, ...]``.

    Packed sequences are unpacked by ``pad_packed`` (last frame repeated, which cannot change a max), so every
    sequence is pooled in one vectorised gather + max.
    """
    lengths = seq_lengths(seqL)
    if lengths is None:
        return x.max(dim=2).values
    return pad_packed(x, lengths)[0].max(dim=2).values.contiguous()


def map_length_groups(fn: Callable[[Tensor], Tensor], packed: Tensor, lengths: list[int]) -> Tensor:
    """Run ``fn`` once per group of equal-length packed sequences; results come back in input order.

    ``packed [1, sum(seqL), ...]``; ``fn: [g, L, ...] -> [g, ...]`` for the ``g`` sequences of length ``L``;
    returns ``[N, ...]``. For networks whose temporal convolutions must not mix neighbouring sequences.
    """
    frames = packed[0]
    lens = torch.tensor(lengths, device=packed.device)
    starts = torch.cumsum(lens, 0) - lens
    order: list[Tensor] = []
    outputs: list[Tensor] = []
    for length in torch.unique(lens).tolist():  # one batch per distinct length
        rows = torch.nonzero(lens == length).flatten()
        index = starts[rows, None] + torch.arange(length, device=packed.device)  # [g, length]
        outputs.append(fn(frames[index]))
        order.append(rows)
    return torch.cat(outputs)[torch.argsort(torch.cat(order))]


class BasicConv2d(nn.Module):
    """Bias-free 2-D convolution (OpenGait ``BasicConv2d``; parameter ``conv.weight``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class BasicConv3d(nn.Module):
    """3-D convolution, bias-free by default (OpenGait ``BasicConv3d``; parameter ``conv3d.weight``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 1,
        bias: bool = False,
        **kwargs,
    ):
        super().__init__()
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding, bias=bias, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3d(x)


class SetBlockWrapper(nn.Module):
    """Apply a 2-D module to every frame: ``[n, c, s, h, w] -> [n, c', s, h', w']``."""

    def __init__(self, forward_block: nn.Module):
        super().__init__()
        self.forward_block = forward_block

    def forward(self, x: Tensor) -> Tensor:
        n, c, s, h, w = x.shape
        y = self.forward_block(x.transpose(1, 2).reshape(n * s, c, h, w))
        return y.reshape(n, s, *y.shape[1:]).transpose(1, 2).contiguous()


class HorizontalPoolingPyramid(nn.Module):
    """HPP: for each bin count b, split the height into b strips and take ``mean + max`` of each strip.

    ``[n, c, h, w] -> [n, c, sum(bin_num)]``. Parameter-free.
    """

    def __init__(self, bin_num: Sequence[int] = (16, 8, 4, 2, 1)):
        super().__init__()
        self.bin_num = tuple(int(b) for b in bin_num)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        strips = [x.reshape(n, c, b, -1) for b in self.bin_num]
        return torch.cat([z.mean(-1) + z.max(-1).values for z in strips], -1)


class GeMHPP(nn.Module):
    """Generalised-mean horizontal pooling with a learnable exponent ``p`` (GaitGL).

    Per strip: ``mean(clamp(x, eps) ** p) ** (1 / p)``; ``[n, c, h, w] -> [n, c, sum(bin_num)]``.
    """

    def __init__(self, bin_num: Sequence[int] = (64,), p: float = 6.5, eps: float = 1.0e-6):
        super().__init__()
        self.bin_num = tuple(int(b) for b in bin_num)
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        strips = [x.reshape(n, c, b, -1) for b in self.bin_num]
        return torch.cat([z.clamp(min=self.eps).pow(self.p).mean(-1).pow(1.0 / self.p) for z in strips], -1)


class SeparateFCs(nn.Module):
    """One linear map per part: ``out[:, :, p] = x[:, :, p] @ fc_bin[p]``; ``[n, c_in, P] -> [n, c_out, P]``.

    ``norm=True`` L2-normalises each weight column (over ``c_in``) first.
    """

    def __init__(self, parts_num: int, in_channels: int, out_channels: int, norm: bool = False):
        super().__init__()
        self.p = parts_num
        self.norm = norm
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(parts_num, in_channels, out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        weight = F.normalize(self.fc_bin, dim=1) if self.norm else self.fc_bin
        return x.permute(2, 0, 1).matmul(weight).permute(1, 2, 0).contiguous()


class SeparateBNNecks(nn.Module):
    """BNNeck per part: BatchNorm, then (cosine, if ``norm``) part-wise classifier.

    ``[n, c, P] -> (feature [n, c, P], logits [n, class_num, P])``; with ``norm`` the feature is L2-normalised
    and the logits are cosines. ``parallel_BN1d``: one ``BatchNorm1d(c * P)`` on the flattened ``c * P + p``
    index, else one ``BatchNorm1d(c)`` per part.
    """

    def __init__(self, parts_num: int, in_channels: int, class_num: int, norm: bool = True, parallel_BN1d: bool = True):
        super().__init__()
        self.p = parts_num
        self.class_num = class_num
        self.norm = norm
        self.parallel_BN1d = parallel_BN1d
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(parts_num, in_channels, class_num)))
        if parallel_BN1d:
            self.bn1d = nn.BatchNorm1d(in_channels * parts_num)
        else:
            bn = nn.BatchNorm1d(in_channels)
            self.bn1d = nn.ModuleList(copy.deepcopy(bn) for _ in range(parts_num))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, c, p = x.shape
        if self.parallel_BN1d:
            x = self.bn1d(x.reshape(n, c * p)).reshape(n, c, p)
        else:
            x = torch.stack([bn(x[:, :, i]) for i, bn in enumerate(self.bn1d)], 2)
        feature = x.permute(2, 0, 1)  # [P, n, c]
        if self.norm:
            feature = F.normalize(feature, dim=-1)
            logits = feature.matmul(F.normalize(self.fc_bin, dim=1))
        else:
            logits = feature.matmul(self.fc_bin)
        return feature.permute(1, 2, 0).contiguous(), logits.permute(1, 2, 0).contiguous()


def init_opengait_(model: nn.Module) -> None:
    """OpenGait's ``init_parameters``: xavier-uniform conv / linear weights (bias 0), BN weight ~ N(1, 0.02), bias 0.

    ``fc_bin`` parameters keep their xavier init from construction. Visiting modules in registration order
    consumes the RNG exactly like OpenGait, so equal seeds give equal weights.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight.data)
            if m.bias is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.affine:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0.0)


class BasicBlock2D(nn.Module):
    """torchvision ``BasicBlock``: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``[n, c_in, h, w] ->
    [n, planes, h / stride, w / stride]``. ``downsample`` (conv1x1 + BN) is the shortcut when the shape changes."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)
