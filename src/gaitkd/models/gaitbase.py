"""GaitBase (OpenGait class ``Baseline``, Fan et al. "OpenGait"), numerically identical to OpenGait's implementation.

Frame-wise ResNet9 (torchvision ``BasicBlock`` semantics, written here without torchvision) + temporal max + HPP +
part-wise FCs + a cosine BNNeck classifier. Parameter names follow OpenGait (``Backbone.forward_block.layer2.0.
downsample.0.weight``, ``FCs.fc_bin``, ``BNNecks.bn1d.weight``). Also owns ``gaitbase_kwargs``, the translator of
OpenGait's ``model_cfg`` (CASIA-B / OU-MVLP / Gait3D configs differ only in ``class_num``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .blocks import (
    BasicBlock2D,
    BasicConv2d,
    HorizontalPoolingPyramid,
    SeparateBNNecks,
    SeparateFCs,
    SeqL,
    SetBlockWrapper,
    check_packed,
    init_opengait_,
    seq_lengths,
    temporal_max,
)
from .output import GaitOutput

# OpenGait's ResNet9 constructor defaults: a backbone_cfg that omits a key gets these, as in OpenGait.
RESNET9_DEFAULTS: dict[str, Any] = {
    "channels": [32, 64, 128, 256],
    "in_channel": 1,
    "layers": [1, 2, 2, 1],
    "strides": [1, 2, 2, 1],
    "maxpool": True,
}


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Module, int]:
    """torchvision's ``ResNet._make_layer`` (the shortcut is built before the blocks, which fixes the RNG order).

    Returns the stage and the new ``inplanes``. Zero blocks: identity, ``inplanes`` unchanged (as OpenGait).
    """
    if blocks < 1:
        return nn.Identity(), inplanes
    downsample = None
    if stride != 1 or inplanes != planes * BasicBlock2D.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * BasicBlock2D.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * BasicBlock2D.expansion),
        )
    first = BasicBlock2D(inplanes, planes, stride, downsample)
    inplanes = planes * BasicBlock2D.expansion
    return nn.Sequential(first, *(BasicBlock2D(inplanes, planes) for _ in range(1, blocks))), inplanes


def _replay_torchvision_resnet_rng(layers: Sequence[int]) -> None:
    """Consume the RNG exactly as the discarded parts of OpenGait's ResNet9 construction do.

    OpenGait's ResNet9 first runs torchvision's ``ResNet.__init__`` (standard 64..512 ImageNet stem and stages,
    a 1000-way fc, kaiming-normal conv init) and then replaces all of it; those throwaway draws shift every later
    initial weight, so they are replayed here for ``torch.manual_seed`` to reproduce OpenGait's weights.
    """
    stem = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    stages, inplanes = [], 64
    for planes, blocks, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
        stage, inplanes = _make_layer(inplanes, planes, int(blocks), stride)
        stages.append(stage)
    nn.Linear(512 * BasicBlock2D.expansion, 1000)
    for m in nn.Sequential(stem, *stages).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResNet9(nn.Module):
    """OpenGait's ResNet9 backbone on frames: ``[n, in_channel, H, W] -> [n, channels[-1], H', W']``.

    3x3 stem conv + BN + ReLU (+ torchvision's 3x3/2 max-pool if ``maxpool``), then four BasicBlock2D stages.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        layers: Sequence[int] = (1, 1, 1, 1),
        strides: Sequence[int] = (1, 2, 2, 1),
        maxpool: bool = False,
        in_channel: int = 1,
    ):
        super().__init__()
        for key, value in {"channels": channels, "layers": layers, "strides": strides}.items():
            if len(value) != 4:
                raise ValueError(f"ResNet9 {key} needs 4 values (one per stage), got {list(value)}")
        _replay_torchvision_resnet_rng(layers)
        inplanes = int(channels[0])
        self.conv1 = BasicConv2d(int(in_channel), inplanes, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if maxpool else nn.Identity()
        self.layer1, inplanes = _make_layer(inplanes, int(channels[0]), int(layers[0]), int(strides[0]))
        self.layer2, inplanes = _make_layer(inplanes, int(channels[1]), int(layers[1]), int(strides[1]))
        self.layer3, inplanes = _make_layer(inplanes, int(channels[2]), int(layers[2]), int(strides[2]))
        self.layer4, inplanes = _make_layer(inplanes, int(channels[3]), int(layers[3]), int(strides[3]))
        self.out_channels = inplanes

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class GaitBase(nn.Module):
    """GaitBase: ``sils [N, T, H, W]`` (or packed ``[1, sum(seqL), H, W]``) -> ``GaitOutput``.

    ``embeddings``: pre-BNNeck ``[N, out_channels, P]`` (OpenGait evaluates and triplet-trains this one);
    ``logits``: cosine ``[N, class_num, P]`` from the BNNeck. ``P = sum(bin_num)``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        layers: Sequence[int] = (1, 1, 1, 1),
        strides: Sequence[int] = (1, 2, 2, 1),
        maxpool: bool = False,
        in_channel: int = 1,
        bin_num: Sequence[int] = (16,),
        out_channels: int = 256,
        class_num: int = 74,
        fc_norm: bool = False,
        bnneck_norm: bool = True,
        parallel_BN1d: bool = True,
    ):
        super().__init__()
        # Registration / construction order mirrors OpenGait so that equal seeds give equal initial weights.
        backbone = ResNet9(channels, layers, strides, maxpool, in_channel)
        self.Backbone = SetBlockWrapper(backbone)
        parts = sum(int(b) for b in bin_num)
        self.FCs = SeparateFCs(parts, backbone.out_channels, int(out_channels), norm=fc_norm)
        self.BNNecks = SeparateBNNecks(parts, int(out_channels), int(class_num), bnneck_norm, parallel_BN1d)
        self.HPP = HorizontalPoolingPyramid(bin_num)
        init_opengait_(self)

    @property
    def parts_num(self) -> int:
        return self.FCs.p

    def forward(self, sils: Tensor, seqL: SeqL = None) -> GaitOutput:
        """``sils [N, T, H, W]`` in [0, 1]; ``seqL`` per-sequence frame counts for packed input."""
        lengths = seq_lengths(seqL)
        check_packed(sils, lengths)
        maps = temporal_max(self.Backbone(sils.unsqueeze(1)), lengths)  # [N, C, h, w]
        embed = self.FCs(self.HPP(maps))  # [N, out_channels, P]
        _, logits = self.BNNecks(embed)
        return GaitOutput(embeddings=embed, logits=logits)


def _implied(section: Mapping, where: str, **values: int) -> None:
    """Entries of a head config that the network fixes: absent is fine, a different value is an error."""
    for key, value in values.items():
        if key in section and int(section[key]) != value:
            raise ValueError(f"Baseline model_cfg {where}.{key}={section[key]} but the network implies {value}")


def gaitbase_kwargs(model_cfg: Mapping, dataset_name: str) -> dict:
    """OpenGait ``Baseline`` ``model_cfg`` -> ``GaitBase`` kwargs (the architecture does not depend on the dataset)."""
    from .opengait import _check_keys, _require  # deferred: opengait imports this module for its registry

    _check_keys(model_cfg, {"backbone_cfg", "SeparateFCs", "SeparateBNNecks", "bin_num"}, "Baseline")
    backbone = dict(_require(model_cfg, "backbone_cfg", "Baseline"))
    _check_keys(backbone, {"type", *RESNET9_DEFAULTS, "block"}, "Baseline.backbone_cfg")
    if backbone.get("type") != "ResNet9" or backbone.get("block") != "BasicBlock":
        raise ValueError(
            f"Baseline backbone_cfg must be type ResNet9 with block BasicBlock, "
            f"got type={backbone.get('type')!r} block={backbone.get('block')!r}"
        )
    arch = {key: backbone.get(key, default) for key, default in RESNET9_DEFAULTS.items()}
    bin_num = [int(b) for b in _require(model_cfg, "bin_num", "Baseline")]
    fcs = dict(_require(model_cfg, "SeparateFCs", "Baseline"))
    necks = dict(_require(model_cfg, "SeparateBNNecks", "Baseline"))
    _check_keys(fcs, {"in_channels", "out_channels", "parts_num", "norm"}, "Baseline.SeparateFCs")
    _check_keys(necks, {"in_channels", "class_num", "parts_num", "norm", "parallel_BN1d"}, "Baseline.SeparateBNNecks")
    out_channels = int(_require(fcs, "out_channels", "Baseline.SeparateFCs"))
    channels = [int(c) for c in arch["channels"]]
    _implied(fcs, "SeparateFCs", in_channels=channels[-1] * BasicBlock2D.expansion, parts_num=sum(bin_num))
    _implied(necks, "SeparateBNNecks", in_channels=out_channels, parts_num=sum(bin_num))
    return {
        "channels": channels,
        "layers": [int(v) for v in arch["layers"]],
        "strides": [int(v) for v in arch["strides"]],
        "maxpool": bool(arch["maxpool"]),
        "in_channel": int(arch["in_channel"]),
        "bin_num": bin_num,
        "out_channels": out_channels,
        "class_num": int(_require(necks, "class_num", "Baseline.SeparateBNNecks")),
        "fc_norm": bool(fcs.get("norm", False)),
        "bnneck_norm": bool(necks.get("norm", True)),
        "parallel_BN1d": bool(necks.get("parallel_BN1d", True)),
    }
