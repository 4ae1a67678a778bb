"""Attention transfer (Zagoruyko & Komodakis) on part embeddings or feature maps, in the boundary slot."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gaitkd.distill.base import FeatureKD
from gaitkd.losses.registry import register


def attention_map(x: Tensor, p: float) -> Tensor:
    """``normalize_L2(flatten(sum_c |x|^p))`` per sample: ``[N, C, *S] -> [N, prod(S)]`` (eps 1e-12)."""
    return F.normalize(x.abs().pow(p).sum(1).flatten(1), dim=1)


@register("attention_transfer")
class AttentionTransferLoss(FeatureKD):
    """``sum_i mean((a(feats_s[i]) - a(feats_t[i]))^2)`` with :func:`attention_map` (GaitKD's ``FeatsKD_ATLoss``).

    On ``[N, C, P]`` part embeddings the attention is how much activation each part carries, normalised over
    the parts. It sums over channels first, so teacher and student widths may differ (no connector).
    """

    needs_same_width = False

    def __init__(self, p: float = 2.0) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"AttentionTransferLoss: p must be > 0, got {p}")
        self.p = float(p)

    def forward(self, feats_s: Tensor | Sequence[Tensor], feats_t: Tensor | Sequence[Tensor]) -> tuple[Tensor, dict]:
        """feats_s, feats_t: tensors (or lists) alike but for the channel dim -> scalar loss, info {loss}."""
        terms = [(attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()
                 for s, t in self.pairs(feats_s, feats_t)]
        loss = torch.stack(terms).sum()
        return loss, {"loss": loss.detach().clone()}
