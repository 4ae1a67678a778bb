"""Training-only adapters between teacher and student heads: part-count alignment, a per-part connector,
and an auxiliary BNNeck-style classifier for students that have none (e.g. GaitSet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALIGN_MODES = ("truncate", "pool", "interpolate")


def align_parts(x: Tensor, parts: int, mode: str = "truncate") -> Tensor:
    """Map ``[N, X, P]`` (X = channels or classes) to ``[N, X, parts]``.

    ``truncate`` keeps the first ``parts`` parts (GaitKD's choice; only meaningful when both part layouts
    start alike), ``pool`` is adaptive average pooling over P, ``interpolate`` is linear interpolation
    (``align_corners=False``). Identity when ``P == parts``.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"align_parts: unknown mode {mode!r}; expected one of {ALIGN_MODES}")
    if x.dim() != 3:
        raise ValueError(f"align_parts expects [N, X, P], got shape {tuple(x.shape)}")
    if parts < 1:
        raise ValueError(f"align_parts: parts must be >= 1, got {parts}")
    if x.size(2) == parts:
        return x
    if mode == "truncate":
        if parts > x.size(2):
            raise ValueError(f"align_parts: cannot truncate {x.size(2)} parts to {parts}")
        return x[:, :, :parts]
    if mode == "pool":
        return F.adaptive_avg_pool1d(x, parts)
    return F.interpolate(x, size=parts, mode="linear", align_corners=False)


class PartConnector(nn.Module):
    """One linear map per part (like OpenGait's ``SeparateFCs``): ``[N, Cin, P] -> [N, Cout, P]``."""

    def __init__(self, parts: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(parts, in_channels, out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        # [P, N, Cin] @ [P, Cin, Cout] -> [P, N, Cout] -> [N, Cout, P]
        return x.permute(2, 0, 1).matmul(self.weight).permute(1, 2, 0).contiguous()


class AuxPartClassifier(nn.Module):
    """BNNeck-style head: ``BatchNorm1d(C*P)`` on the flattened embedding, then per-part cosine logits.

    ``[N, C, P] -> [N, K, P]`` in [-1, 1]; scale them (e.g. 16, as OpenGait's BNNeck) in the CE / KD loss.
    """

    def __init__(self, parts: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels * parts)
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(parts, channels, num_classes)))

    def forward(self, x: Tensor) -> Tensor:
        n, c, p = x.shape
        feat = F.normalize(self.bn(x.reshape(n, c * p)).view(n, c, p), dim=1)  # [N, C, P]
        logits = feat.permute(2, 0, 1).matmul(F.normalize(self.weight, dim=1))  # [P, N, K]
        return logits.permute(1, 2, 0).contiguous()
