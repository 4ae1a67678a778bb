"""DeepGaitV2 (Fan et al., "Exploring Deep Models for Practical Gait Recognition"), identical to OpenGait's.

A ResNet-like backbone in one of three modes: ``2d`` (frame-wise residual blocks), ``p3d`` (pseudo-3-D: frame-wise
3x3 convs plus a temporal ``(3, 1, 1)`` shortcut conv) or ``3d`` (3x3x3 convs), then temporal max, a 16-strip HPP,
part-wise FCs and a cosine BNNeck. This file owns the residual blocks, the model and its OpenGait ``model_cfg``
translator. Parameter names follow OpenGait (``layer2.0.conv1.forward_block.0.weight``, ``layer2.0.shortcut3d.weight``,
``FCs.fc_bin``, ``BNNecks.bn1d.weight``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from .blocks import (
    BasicBlock2D,
    HorizontalPoolingPyramid,
    SeparateBNNecks,
    SeparateFCs,
    SeqL,
    SetBlockWrapper,
    check_packed,
    init_opengait_,
    map_length_groups,
    seq_lengths,
    temporal_max,
)
from .output import GaitOutput

MODES = ("2d", "p3d", "3d")
PARTS = 16  # OpenGait hard-codes a 16-strip HPP and 16-part heads for DeepGaitV2
STAGE_STRIDES = (1, 2, 2, 1)  # spatial stride of layer1..layer4


def _conv3x3(c_in: int, c_out: int, stride: int | tuple[int, ...] = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


class BasicBlockP3D(nn.Module):
    """Pseudo-3-D residual block: ``[n, c_in, s, h, w] -> [n, c_out, s, h / stride, w / stride]``.

    Frame-wise conv3x3-BN-ReLU, then ``relu(y + sbn(shortcut3d(y)))`` with a temporal ``(3, 1, 1)`` conv,
    frame-wise conv3x3-BN, plus the (3-D 1x1x1) downsampled input, ReLU.
    """

    def __init__(self, c_in: int, c_out: int, stride: int | tuple[int, int] = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = SetBlockWrapper(
            nn.Sequential(_conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        )
        self.conv2 = SetBlockWrapper(nn.Sequential(_conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)))
        self.shortcut3d = nn.Conv3d(c_out, c_out, (3, 1, 1), (1, 1, 1), (1, 0, 0), bias=False)
        self.sbn = nn.BatchNorm3d(c_out)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.conv2(F.relu(out + self.sbn(self.shortcut3d(out))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class BasicBlock3D(nn.Module):
    """3-D residual block (3x3x3 convs): ``[n, c_in, s, h, w] -> [n, c_out, s', h', w']`` for ``stride (t, h, w)``.

    As OpenGait, the first conv pads time by 1 for temporal stride 1 or 2 and by 0 for stride 3.
    """

    def __init__(self, c_in: int, c_out: int, stride: Sequence[int] = (1, 1, 1), downsample: nn.Module | None = None):
        super().__init__()
        stride = tuple(int(v) for v in stride)
        if stride[0] not in (1, 2, 3):
            raise ValueError(f"BasicBlock3D temporal stride must be 1, 2 or 3, got {stride}")
        time_pad = 1 if stride[0] in (1, 2) else 0
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride, (time_pad, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _stage(mode: str, c_in: int, c_out: int, stride: int, blocks: int, frame_wise: bool) -> nn.Sequential:
    """One ResNet stage (OpenGait ``make_layer``): first block strides and projects, the others keep the shape.

    ``frame_wise`` forces ``BasicBlock2D`` (layer1 in every mode). The downsample is built before the block
    (OpenGait's construction order) and is registered inside the block.
    """
    block_mode = "2d" if frame_wise else mode
    if block_mode == "3d":
        first_stride: Any = (1, stride, stride)
    else:
        first_stride = (stride, stride)
    downsample: nn.Module | None = None
    if stride > 1 or c_in != c_out:
        if block_mode == "2d":
            downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, first_stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            downsample = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(c_out)
            )
    block = {"2d": BasicBlock2D, "p3d": BasicBlockP3D, "3d": BasicBlock3D}[block_mode]
    layers = [block(c_in, c_out, first_stride, downsample)]
    layers += [block(c_out, c_out) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DeepGaitV2(nn.Module):
    """DeepGaitV2: ``sils [N, T, H, W]`` (or packed ``[1, sum(seqL), H, W]``) -> ``GaitOutput``.

    ``embeddings [N, channels[2], 16]``: the FC output ``embed_1`` (OpenGait's inference feature), or the
    BNNeck-normalised ``embed_2`` with ``use_emb2`` (then ``triplet_embeddings`` = ``embed_1``); ``logits``:
    cosine logits ``[N, class_num, 16]``. With ``in_channels > 1`` the input is ``[N, T, C, H, W]``.
    Packed input in ``p3d`` / ``3d`` mode runs each group of equal-length sequences as one batch so that
    temporal convolutions never mix sequences (OpenGait only ever feeds one sequence per forward then).
    """

    def __init__(
        self,
        mode: str = "p3d",
        in_channels: int = 1,
        layers: Sequence[int] = (1, 1, 1, 1),
        channels: Sequence[int] = (64, 128, 256, 512),
        class_num: int = 74,
        use_emb2: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"DeepGaitV2 mode must be one of {MODES}, got {mode!r}")
        layers, channels = [int(v) for v in layers], [int(v) for v in channels]
        if len(layers) != 4 or len(channels) != 4 or min(layers) < 1:
            raise ValueError(f"DeepGaitV2 needs 4 positive layers and 4 channels, got layers={layers}, {channels=}")
        self.mode = mode
        self.in_channels = int(in_channels)
        self.use_emb2 = bool(use_emb2)
        # Construction / registration order mirrors OpenGait so that equal seeds give equal initial weights.
        c0 = channels[0]
        self.layer0 = SetBlockWrapper(
            nn.Sequential(_conv3x3(self.in_channels, c0), nn.BatchNorm2d(c0), nn.ReLU(inplace=True))
        )
        self.layer1 = SetBlockWrapper(_stage(mode, c0, c0, STAGE_STRIDES[0], layers[0], frame_wise=True))
        for i in (1, 2, 3):
            stage = _stage(mode, channels[i - 1], channels[i], STAGE_STRIDES[i], layers[i], frame_wise=False)
            setattr(self, f"layer{i + 1}", SetBlockWrapper(stage) if mode == "2d" else stage)
        self.FCs = SeparateFCs(PARTS, channels[3], channels[2])
        self.BNNecks = SeparateBNNecks(PARTS, channels[2], class_num)
        self.HPP = HorizontalPoolingPyramid(bin_num=(PARTS,))
        init_opengait_(self)

    def backbone(self, sils: Tensor) -> Tensor:
        """``[n, s, H, W]`` (or ``[n, s, C, H, W]``) -> frame maps ``[n, channels[3], s, H/4, W/4]``."""
        x = sils.unsqueeze(1) if sils.dim() == 4 else sils.transpose(1, 2)
        return self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))

    def _pooled_maps(self, sils: Tensor, lengths: list[int] | None) -> Tensor:
        """Temporally max-pooled maps ``[N, channels[3], h, w]`` for plain or packed input."""
        if lengths is None:
            return self.backbone(sils).max(dim=2).values
        if self.mode == "2d":  # frame-wise network: pack-agnostic, pool each sequence's slice
            return temporal_max(self.backbone(sils), lengths)
        return map_length_groups(lambda group: self.backbone(group).max(dim=2).values, sils, lengths)

    def _check_input(self, sils: Tensor, lengths: list[int] | None) -> None:
        if self.in_channels == 1:
            check_packed(sils, lengths)
        elif sils.dim() != 5 or sils.shape[2] != self.in_channels:
            raise ValueError(
                f"DeepGaitV2 with in_channels={self.in_channels} expects sils [N, T, C, H, W], "
                f"got shape {tuple(sils.shape)}"
            )
        else:
            check_packed(sils[:, :, 0], lengths)

    def forward(self, sils: Tensor, seqL: SeqL = None) -> GaitOutput:
        """``sils [N, T, H, W]`` in [0, 1]; ``seqL`` per-sequence frame counts for packed input."""
        lengths = seq_lengths(seqL)
        self._check_input(sils, lengths)
        maps = self._pooled_maps(sils, lengths)  # [N, channels[3], h, w]
        if maps.shape[-2] * maps.shape[-1] % PARTS:  # OpenGait's HPP splits the flattened h * w into 16 strips
            raise ValueError(
                f"DeepGaitV2: feature map {tuple(maps.shape[-2:])} of input {tuple(sils.shape[-2:])} "
                f"cannot be split into {PARTS} strips (OpenGait expects 64 x 44 or 64 x 88 frames)"
            )
        embed_1 = self.FCs(self.HPP(maps))  # [N, channels[2], 16]
        embed_2, logits = self.BNNecks(embed_1)
        if self.use_emb2:
            return GaitOutput(embeddings=embed_2, logits=logits, triplet_embeddings=embed_1)
        return GaitOutput(embeddings=embed_1, logits=logits)


def deepgaitv2_kwargs(model_cfg: Mapping, dataset_name: str) -> dict:
    """OpenGait DeepGaitV2 ``model_cfg`` (CASIA-B / OU-MVLP / GREW / Gait3D configs) -> ``DeepGaitV2`` kwargs."""
    from .opengait import _check_keys, _require  # late import: opengait imports this module for its registry

    _check_keys(model_cfg, {"Backbone", "SeparateBNNecks", "use_emb2"}, "DeepGaitV2")
    backbone = dict(_require(model_cfg, "Backbone", "DeepGaitV2"))
    _check_keys(backbone, {"mode", "in_channels", "layers", "channels"}, "DeepGaitV2.Backbone")
    channels = [int(c) for c in _require(backbone, "channels", "DeepGaitV2.Backbone")]
    necks = dict(_require(model_cfg, "SeparateBNNecks", "DeepGaitV2"))
    _check_keys(necks, {"class_num", "in_channels", "parts_num"}, "DeepGaitV2.SeparateBNNecks")
    # OpenGait ignores these two and derives them from the network: accept them only when they agree.
    implied = {"in_channels": channels[2] if len(channels) == 4 else None, "parts_num": PARTS}
    for key, value in implied.items():
        if key in necks and int(necks[key]) != value:
            raise ValueError(f"DeepGaitV2 model_cfg SeparateBNNecks.{key}={necks[key]} but the network implies {value}")
    return {
        "mode": str(_require(backbone, "mode", "DeepGaitV2.Backbone")),
        "in_channels": int(_require(backbone, "in_channels", "DeepGaitV2.Backbone")),
        "layers": [int(v) for v in _require(backbone, "layers", "DeepGaitV2.Backbone")],
        "channels": channels,
        "class_num": int(_require(necks, "class_num", "DeepGaitV2.SeparateBNNecks")),
        "use_emb2": bool(model_cfg.get("use_emb2", False)),
    }
