"""GaitSet (Chao et al., "Regarding Gait as a Set"), numerically identical to OpenGait's implementation.

Frame-wise CNN (three set blocks) + set pooling (temporal max) + a global "multilayer pipeline" on pooled maps,
HPP on both branches and part-wise FCs. Parameter names follow OpenGait (``set_block1.forward_block.0.conv.weight``,
``gl_block2.0.conv.weight``, ``Head.fc_bin``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import (
    BasicConv2d,
    HorizontalPoolingPyramid,
    SeparateFCs,
    SeqL,
    SetBlockWrapper,
    check_packed,
    init_opengait_,
    seq_lengths,
    temporal_max,
)
from .output import GaitOutput


def _conv_block(c_in: int, c_out: int, first_kernel: int, pool: bool) -> nn.Sequential:
    """Conv(k) LReLU Conv3x3 LReLU [MaxPool2] with OpenGait's layer indices (convs at 0 and 2)."""
    layers: list[nn.Module] = [
        BasicConv2d(c_in, c_out, first_kernel, 1, first_kernel // 2),
        nn.LeakyReLU(inplace=True),
        BasicConv2d(c_out, c_out, 3, 1, 1),
        nn.LeakyReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class GaitSet(nn.Module):
    """GaitSet: ``sils [N, T, H, W]`` (or packed ``[1, sum(seqL), H, W]``) -> embeddings ``[N, out_channels, P]``.

    ``P = 2 * sum(bin_num)`` (62 for the default pyramid). No classifier (triplet loss only).
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (1, 32, 64, 128),
        out_channels: int = 256,
        bin_num: Sequence[int] = (16, 8, 4, 2, 1),
        norm: bool = False,
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"GaitSet in_channels needs 4 values (input + 3 blocks), got {list(in_channels)}")
        c0, c1, c2, c3 = (int(c) for c in in_channels)
        # Registration / construction order mirrors OpenGait so that equal seeds give equal initial weights.
        set_block1 = _conv_block(c0, c1, 5, pool=True)
        set_block2 = _conv_block(c1, c2, 3, pool=True)
        set_block3 = _conv_block(c2, c3, 3, pool=False)
        self.set_block1 = SetBlockWrapper(set_block1)
        self.set_block2 = SetBlockWrapper(set_block2)
        self.set_block3 = SetBlockWrapper(set_block3)
        self.gl_block2 = copy.deepcopy(set_block2)
        self.gl_block3 = copy.deepcopy(set_block3)
        self.HPP = HorizontalPoolingPyramid(bin_num)
        self.Head = SeparateFCs(2 * sum(self.HPP.bin_num), c3, out_channels, norm=norm)
        init_opengait_(self)

    @property
    def parts_num(self) -> int:
        return self.Head.p

    def forward(self, sils: Tensor, seqL: SeqL = None) -> GaitOutput:
        """``sils [N, T, H, W]`` in [0, 1]; ``seqL`` per-sequence frame counts for packed input."""
        lengths = seq_lengths(seqL)
        check_packed(sils, lengths)
        x = self.set_block1(sils.unsqueeze(1))  # [n, c1, s, h/2, w/2]
        gl = self.gl_block2(temporal_max(x, lengths))
        x = self.set_block2(x)
        gl = self.gl_block3(gl + temporal_max(x, lengths))
        x = temporal_max(self.set_block3(x), lengths)  # [N, c3, h/4, w/4]
        gl = gl + x
        feature = torch.cat([self.HPP(x), self.HPP(gl)], -1)  # [N, c3, P]
        return GaitOutput(embeddings=self.Head(feature))

