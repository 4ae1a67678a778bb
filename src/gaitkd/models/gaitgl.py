"""GaitGL (Lin et al., global-local 3-D convolutions + local temporal aggregation), identical to OpenGait's.

Two architectures, chosen like OpenGait by the dataset name: the CASIA-B branch (3 channel values, one GLConv per
stage, 8 local strips) and the deeper OU-MVLP / GREW branch (4 channel values, two GLConvs per stage, 2 strips).
Unlike OpenGait, eval batches may hold several sequences: 3-D convolutions must not mix sequences, so packed
input is grouped by length and each group runs as one batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (
    BasicConv3d,
    GeMHPP,
    SeparateBNNecks,
    SeparateFCs,
    SeqL,
    check_packed,
    init_opengait_,
    map_length_groups,
    seq_lengths,
)
from .output import GaitOutput

DEEP_DATASETS = ("OUMVLP", "GREW")  # OpenGait builds the deeper network for exactly these dataset names
PARTS = 64  # GeM-HPP bins; OpenGait hard-codes 64 parts for the heads


class GLConv(nn.Module):
    """Global + local 3-D conv: ``[n, c_in, s, h, w] -> [n, c_out, s, h, w]`` (``[.., 2h, ..]`` if ``fm_sign``).

    The local conv runs on horizontal strips of height ``h // 2**halving``, each zero-padded on its own.
    ``fm_sign=False``: ``lrelu(global) + lrelu(local)``; ``True``: ``lrelu(cat([global, local], height))``.
    """

    def __init__(self, in_channels: int, out_channels: int, halving: int, fm_sign: bool = False):
        super().__init__()
        self.halving = halving
        self.fm_sign = fm_sign
        self.global_conv3d = BasicConv3d(in_channels, out_channels, 3, 1, 1)
        self.local_conv3d = BasicConv3d(in_channels, out_channels, 3, 1, 1)

    def _local(self, x: Tensor) -> Tensor:
        if self.halving == 0:
            return self.local_conv3d(x)
        n, c, s, h, w = x.shape
        strip = h // 2**self.halving
        if strip == 0:
            raise ValueError(f"GLConv: feature height {h} is smaller than its 2**{self.halving} strips")
        if h % strip:  # ragged last strip (OpenGait's split semantics): convolve strip by strip
            return torch.cat([self.local_conv3d(z) for z in x.split(strip, 3)], 3)
        k = h // strip  # equal strips -> fold them into the batch and run one convolution
        y = self.local_conv3d(x.reshape(n, c, s, k, strip, w).permute(0, 3, 1, 2, 4, 5).reshape(n * k, c, s, strip, w))
        return y.reshape(n, k, *y.shape[1:]).permute(0, 2, 3, 1, 4, 5).reshape(n, y.shape[1], s, h, w)

    def forward(self, x: Tensor) -> Tensor:
        gob, lcl = self.global_conv3d(x), self._local(x)
        if self.fm_sign:
            return F.leaky_relu(torch.cat([gob, lcl], dim=3))
        return F.leaky_relu(gob) + F.leaky_relu(lcl)


def _conv3d_lrelu(c_in: int, c_out: int, kernel, stride, padding) -> list[nn.Module]:
    return [BasicConv3d(c_in, c_out, kernel, stride, padding), nn.LeakyReLU(inplace=True)]


class GaitGL(nn.Module):
    """GaitGL: ``sils [N, T, H, W]`` (or packed ``[1, sum(seqL), H, W]``) -> ``GaitOutput``.

    ``embeddings``: post-BN ``bnft [N, out_channels, 64]`` (OpenGait uses it for both triplet and inference);
    ``logits``: raw ``[N, class_num, 64]``. ``out_channels`` (default ``channels[-1]``, OpenGait's only choice) is
    the width of ``Head0``'s part embeddings: a thin backbone can keep OpenGait's 64 × 128 output. With
    ``bnnecks`` (OpenGait's ``SeparateBNNecks`` model_cfg entry) the
    head is a BNNeck instead: embeddings = its output, triplet embeddings = the pre-BNNeck feature.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        class_num: int = 74,
        dataset_name: str = "CASIA-B",
        bnnecks: Mapping | None = None,
        out_channels: int | None = None,
    ):
        super().__init__()
        c = [int(v) for v in channels]
        width = int(out_channels) if out_channels is not None else c[-1]
        deep = dataset_name in DEEP_DATASETS
        if len(c) != (4 if deep else 3):
            branch = "OUMVLP/GREW (4 values)" if deep else f"{dataset_name!r} -> CASIA-B branch (3 values)"
            raise ValueError(f"GaitGL channels {c} do not fit the {branch}")
        # Construction / registration order mirrors OpenGait so that equal seeds give equal initial weights.
        if deep:
            self.conv3d = nn.Sequential(*_conv3d_lrelu(1, c[0], 3, 1, 1), *_conv3d_lrelu(c[0], c[0], 3, 1, 1))
        else:
            self.conv3d = nn.Sequential(*_conv3d_lrelu(1, c[0], 3, 1, 1))
        self.LTA = nn.Sequential(*_conv3d_lrelu(c[0], c[0], (3, 1, 1), (3, 1, 1), 0))
        if deep:
            self.GLConvA0 = nn.Sequential(GLConv(c[0], c[1], 1), GLConv(c[1], c[1], 1))
            self.MaxPool0 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.GLConvA1 = nn.Sequential(GLConv(c[1], c[2], 1), GLConv(c[2], c[2], 1))
            self.GLConvB2 = nn.Sequential(GLConv(c[2], c[3], 1), GLConv(c[3], c[3], 1, fm_sign=True))
        else:
            self.GLConvA0 = GLConv(c[0], c[1], 3)
            self.MaxPool0 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.GLConvA1 = GLConv(c[1], c[2], 3)
            self.GLConvB2 = GLConv(c[2], c[2], 3, fm_sign=True)
        self.HPP = GeMHPP(bin_num=(PARTS,))
        self.Head0 = SeparateFCs(PARTS, c[-1], width)
        if bnnecks is not None:
            self.BNNecks = SeparateBNNecks(**bnnecks)
        else:
            self.Bn = nn.BatchNorm1d(width)
            self.Head1 = SeparateFCs(PARTS, width, class_num)
        init_opengait_(self)

    def backbone(self, sils: Tensor) -> Tensor:
        """Equal-length sequences ``[n, s, H, W]`` -> temporally max-pooled maps ``[n, C, 2 * H/2, W/2]``."""
        s = sils.shape[1]
        if s < 3:  # OpenGait tiles 1 frame to 3 and 2 frames to 4 so the temporal kernels fit
            sils = sils.repeat(1, 3 if s == 1 else 2, 1, 1)
        x = self.LTA(self.conv3d(sils.unsqueeze(1)))
        x = self.MaxPool0(self.GLConvA0(x))
        x = self.GLConvB2(self.GLConvA1(x))  # [n, C, s', h, w]
        return x.max(dim=2).values

    def _pooled_maps(self, sils: Tensor, lengths: list[int] | None) -> Tensor:
        """Backbone per group of equal-length sequences (3-D convs never mix sequences): ``[N, C, h, w]``."""
        return self.backbone(sils) if lengths is None else map_length_groups(self.backbone, sils, lengths)

    def forward(self, sils: Tensor, seqL: SeqL = None) -> GaitOutput:
        """``sils [N, T, H, W]`` in [0, 1]; ``seqL`` per-sequence frame counts for packed input."""
        lengths = seq_lengths(seqL)
        check_packed(sils, lengths)
        gait = self.Head0(self.HPP(self._pooled_maps(sils, lengths)))  # [N, C, 64]
        if hasattr(self, "BNNecks"):
            bnft, logits = self.BNNecks(gait)
            return GaitOutput(embeddings=bnft, logits=logits, triplet_embeddings=gait)
        bnft = self.Bn(gait)  # BatchNorm1d on [N, C, P]: statistics over (N, P) per channel
        return GaitOutput(embeddings=bnft, logits=self.Head1(bnft))
