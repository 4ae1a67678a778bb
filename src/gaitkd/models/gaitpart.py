"""GaitPart (Fan et al., "Temporal Part-based Model"), numerically identical to OpenGait's implementation.

Owns the ``Plain`` backbone (``BC-c`` convs, ``FC-c-h`` focal convs, ``M`` max-pools), ``FocalConv2d``, the
micro-motion ``TemporalFeatureAggregator`` (TFA), the model and its OpenGait ``model_cfg`` translator.
Frame-wise backbone -> per-frame HPP -> TFA over time (per part) -> part-wise FCs. No classifier.
Parameter names follow OpenGait (``Backbone.forward_block.feature.0.conv.weight``,
``TFA.pooling_func.conv1d3x1.<part>.0.conv.weight``, ``Head.fc_bin``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (
    BasicConv2d,
    HorizontalPoolingPyramid,
    SeparateFCs,
    SeqL,
    SetBlockWrapper,
    check_packed,
    init_opengait_,
    pad_packed,
    seq_lengths,
)
from .output import GaitOutput

CASIA_B_LAYERS = ("BC-32", "BC-32", "M", "FC-64-2", "FC-64-2", "M", "FC-128-3", "FC-128-3")
TFA_SQUEEZE = 4  # hidden width of the micro-motion convs = channels // 4 (fixed in OpenGait)


class FocalConv2d(nn.Module):
    """Conv applied separately to ``2**halving`` horizontal strips (each zero-padded on its own); shared weights.

    ``[b, c_in, h, w] -> [b, c_out, h', w']``; parameter ``conv.weight`` (bias-free) as OpenGait.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, halving: int, **kwargs: Any):
        super().__init__()
        self.halving = halving
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if self.halving == 0:
            return self.conv(x)
        b, c, h, w = x.shape
        strip = h // 2**self.halving
        if strip == 0:
            raise ValueError(f"FocalConv2d: feature height {h} is smaller than its 2**{self.halving} strips")
        if h % strip:  # ragged last strip (OpenGait's split semantics): convolve strip by strip
            return torch.cat([self.conv(z) for z in x.split(strip, 2)], 2)
        k = h // strip  # equal strips -> fold them into the batch and run one convolution
        y = self.conv(x.reshape(b, c, k, strip, w).transpose(1, 2).reshape(b * k, c, strip, w))
        c_out, h_out, w_out = y.shape[1:]
        return y.reshape(b, k, c_out, h_out, w_out).transpose(1, 2).reshape(b, c_out, k * h_out, w_out)


def parse_layer(token: str) -> tuple[str, int, int]:
    """``"BC-32"`` -> ``("BC", 32, 0)``, ``"FC-64-2"`` -> ``("FC", 64, 2)``, ``"M"`` -> ``("M", 0, 0)``."""
    fields = str(token).split("-")
    try:
        if fields == ["M"]:
            return "M", 0, 0
        if fields[0] == "BC" and len(fields) == 2:
            return "BC", int(fields[1]), 0
        if fields[0] == "FC" and len(fields) == 3:
            return "FC", int(fields[1]), int(fields[2])
    except ValueError:
        pass
    raise ValueError(f"Plain layers_cfg entry {token!r} not understood; expected 'BC-<c>', 'FC-<c>-<halving>' or 'M'")


class Plain(nn.Module):
    """OpenGait's ``Plain`` backbone: ``layers_cfg`` tokens in order, LReLU after every conv.

    The first conv is 5x5 (padding 2), the others 3x3 (padding 1); ``M`` is a 2x2 max-pool.
    ``[b, in_channels, H, W] -> [b, out_channels, H / 2**#M, W / 2**#M]``.
    """

    def __init__(self, layers_cfg: Sequence[str], in_channels: int = 1):
        super().__init__()
        specs = [parse_layer(t) for t in layers_cfg]
        if not specs or specs[0][0] == "M":
            raise ValueError(f"Plain layers_cfg must start with a conv ('BC-..' or 'FC-..'), got {list(layers_cfg)}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (kind, c_out, halving) in enumerate(specs):
            if kind == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            k = 5 if i == 0 else 3
            if kind == "BC":
                layers.append(BasicConv2d(c_in, c_out, k, 1, k // 2))
            else:
                layers.append(FocalConv2d(c_in, c_out, k, halving, stride=1, padding=k // 2))
            layers.append(nn.LeakyReLU(inplace=True))
            c_in = c_out
        self.out_channels = c_in
        self.feature = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature(x)


class BasicConv1d(nn.Module):
    """Bias-free 1-D convolution (OpenGait ``BasicConv1d``; parameter ``conv.weight``), ``[b, c, s] -> [b, c', s']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **kwargs: Any):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, bias=False, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _mtb_convs(channels: int, second_kernel: int) -> nn.Sequential:
    """Conv1d(k3) LReLU Conv1d(k) with OpenGait's layer indices (convs at 0 and 2)."""
    hidden = channels // TFA_SQUEEZE
    return nn.Sequential(
        BasicConv1d(channels, hidden, 3, padding=1),
        nn.LeakyReLU(inplace=True),
        BasicConv1d(hidden, channels, second_kernel, padding=second_kernel // 2),
    )


def _grouped(branch: nn.ModuleList, index: int) -> Tensor:
    """The ``index``-th conv of every part stacked for one grouped conv: weight ``[P * c_out, c_in, k]``."""
    return torch.cat([part[index].conv.weight for part in branch])


class TemporalFeatureAggregator(nn.Module):
    """Micro-motion capture: ``x [n, c, s, P]`` (+ ``valid [n, s]``) -> ``[n, c, P]``.

    Two branches (kernel 3/1 -> window-3 template, kernel 3/3 -> window-5 template) per part: sigmoid scores of
    part-specific 1-D convs gate the ``avg + max`` temporal templates; the sum is max-pooled over time.
    The 2 x P part-specific conv stacks run as grouped convolutions (one call per layer for all parts).
    ``valid`` marks real frames of right-padded sequences whose padding repeats the last real frame (as
    ``pad_packed`` does): the result then equals running each sequence on its own.
    """

    def __init__(self, in_channels: int, parts_num: int = 16):
        super().__init__()
        self.parts_num = parts_num
        # OpenGait builds one template per branch and deep-copies it per part (RNG consumed once per branch).
        conv3x1 = _mtb_convs(in_channels, 1)
        self.conv1d3x1 = nn.ModuleList(copy.deepcopy(conv3x1) for _ in range(parts_num))
        conv3x3 = _mtb_convs(in_channels, 3)
        self.conv1d3x3 = nn.ModuleList(copy.deepcopy(conv3x3) for _ in range(parts_num))

    def _scores(self, branch: nn.ModuleList, x: Tensor, valid: Tensor | None) -> Tensor:
        """``x [n, P * c, s]`` (part-major channels, padded frames zero) -> sigmoid scores ``[n, P * c, s]``."""
        first, second = branch[0][0].conv, branch[0][2].conv
        h = F.leaky_relu(F.conv1d(x, _grouped(branch, 0), padding=first.padding, groups=self.parts_num))
        if valid is not None:  # the second conv must see zeros (not activations) beyond each sequence's end
            h = h * valid.to(h.dtype)[:, None]
        return torch.sigmoid(F.conv1d(h, _grouped(branch, 2), padding=second.padding, groups=self.parts_num))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        n, c, s, p = x.shape
        if p != self.parts_num:
            raise ValueError(f"TemporalFeatureAggregator expects {self.parts_num} parts, got input {tuple(x.shape)}")
        # Padded frames repeat the last frame (max-safe); convs and averages need zero padding instead.
        repeated = x.permute(0, 3, 1, 2).reshape(n, p * c, s)
        zeroed = repeated if valid is None else repeated * valid.to(x.dtype)[:, None]
        # AvgPool counts the zero padding (count_include_pad) exactly as OpenGait's nn.AvgPool1d.
        template3 = F.avg_pool1d(zeroed, 3, 1, 1) + F.max_pool1d(repeated, 3, 1, 1)
        template5 = F.avg_pool1d(zeroed, 5, 1, 2) + F.max_pool1d(repeated, 5, 1, 2)
        out = template3 * self._scores(self.conv1d3x1, zeroed, valid)
        out = out + template5 * self._scores(self.conv1d3x3, zeroed, valid)
        if valid is not None:
            out = out.masked_fill(~valid[:, None], float("-inf"))
        return out.max(dim=-1).values.reshape(n, p, c).transpose(1, 2).contiguous()


class PackSequenceWrapper(nn.Module):
    """Runs a temporal aggregator per sequence: packed ``[1, c, sum(seqL), P]`` -> ``[N, c, P]`` in one call."""

    def __init__(self, pooling_func: TemporalFeatureAggregator):
        super().__init__()
        self.pooling_func = pooling_func

    def forward(self, x: Tensor, lengths: list[int] | None = None) -> Tensor:
        if lengths is None:
            return self.pooling_func(x)
        padded, valid = pad_packed(x, lengths)
        return self.pooling_func(padded, valid)


class GaitPart(nn.Module):
    """GaitPart: ``sils [N, T, H, W]`` (or packed ``[1, sum(seqL), H, W]``) -> embeddings ``[N, out_channels, P]``.

    ``P = sum(bin_num)`` (16). No classifier (triplet loss only).
    """

    def __init__(
        self,
        layers_cfg: Sequence[str] = CASIA_B_LAYERS,
        out_channels: int = 128,
        bin_num: Sequence[int] = (16,),
        in_channels: int = 1,
        norm: bool = False,
    ):
        super().__init__()
        if in_channels != 1:
            raise ValueError(f"GaitPart takes one-channel silhouettes [N, T, H, W], got in_channels={in_channels}")
        # Construction / registration order mirrors OpenGait so that equal seeds give equal initial weights.
        backbone = Plain(layers_cfg, in_channels)
        channels = backbone.out_channels
        hpp = HorizontalPoolingPyramid(bin_num)
        parts = sum(hpp.bin_num)
        self.Backbone = SetBlockWrapper(backbone)
        self.Head = SeparateFCs(parts, channels, out_channels, norm=norm)
        self.HPP = hpp
        self.TFA = PackSequenceWrapper(TemporalFeatureAggregator(channels, parts))
        init_opengait_(self)

    @property
    def parts_num(self) -> int:
        return self.Head.p

    def forward(self, sils: Tensor, seqL: SeqL = None) -> GaitOutput:
        """``sils [N, T, H, W]`` in [0, 1]; ``seqL`` per-sequence frame counts for packed input."""
        lengths = seq_lengths(seqL)
        check_packed(sils, lengths)
        n, t, h, w = sils.shape
        # Backbone and HPP are frame-wise: run them on all frames at once, [n * t, 1, H, W] -> [n * t, c, P].
        parts = self.HPP(self.Backbone.forward_block(sils.reshape(n * t, 1, h, w)))
        feats = parts.reshape(n, t, *parts.shape[1:]).transpose(1, 2)  # [n, c, t, P]
        return GaitOutput(embeddings=self.Head(self.TFA(feats, lengths)))


def gaitpart_kwargs(model_cfg: Mapping, dataset_name: str) -> dict:
    """OpenGait GaitPart ``model_cfg`` (CASIA-B / OU-MVLP / GREW / Gait3D configs) -> ``GaitPart`` kwargs."""
    from .opengait import _check_keys, _require  # late import: opengait imports this module for its registry

    _check_keys(model_cfg, {"backbone_cfg", "SeparateFCs", "bin_num"}, "GaitPart")
    backbone = dict(_require(model_cfg, "backbone_cfg", "GaitPart"))
    _check_keys(backbone, {"type", "layers_cfg", "in_channels"}, "GaitPart.backbone_cfg")
    if backbone.get("type", "Plain") != "Plain":
        raise ValueError(f"GaitPart model_cfg backbone_cfg.type={backbone['type']!r}: only 'Plain' is supported")
    layers = [str(t) for t in _require(backbone, "layers_cfg", "GaitPart.backbone_cfg")]
    bin_num = [int(b) for b in model_cfg.get("bin_num", (16,))]
    fcs = dict(_require(model_cfg, "SeparateFCs", "GaitPart"))
    _check_keys(fcs, {"in_channels", "out_channels", "parts_num", "norm"}, "GaitPart.SeparateFCs")
    convs = [parse_layer(t) for t in layers if t != "M"]
    if not convs:
        raise ValueError(f"GaitPart model_cfg backbone_cfg.layers_cfg={layers} has no conv layer")
    # The TFA and head see the last conv's channels and the HPP parts: these values are implied, so check them.
    implied = {"in_channels": convs[-1][1], "parts_num": sum(bin_num)}
    for key, value in implied.items():
        if key in fcs and int(fcs[key]) != value:
            raise ValueError(f"GaitPart model_cfg SeparateFCs.{key}={fcs[key]} but the network implies {value}")
    return {
        "layers_cfg": layers,
        "out_channels": int(_require(fcs, "out_channels", "GaitPart.SeparateFCs")),
        "bin_num": bin_num,
        "in_channels": int(backbone.get("in_channels", 1)),
        "norm": bool(fcs.get("norm", False)),
    }
