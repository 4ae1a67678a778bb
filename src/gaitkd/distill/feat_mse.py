"""Feature regression (FitNets-style hint learning) on part embeddings, in the boundary slot."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gaitkd.distill.base import FeatureKD
from gaitkd.losses.registry import register


@register("feat_mse")
class FeatureMSELoss(FeatureKD):
    """``sum_i mean((feats_s[i] - feats_t[i])^2)`` over the list entries (GaitKD's ``FeatsKD_MSELoss``).

    Unlike the activation boundary it regresses the teacher's values, not only their signs. When the widths
    differ, the branch's per-part connector maps the student embedding to the teacher's width first.
    """

    def forward(self, feats_s: Tensor | Sequence[Tensor], feats_t: Tensor | Sequence[Tensor]) -> tuple[Tensor, dict]:
        """feats_s, feats_t: same-shape tensors or lists of them -> scalar loss, info {loss}."""
        loss = torch.stack([(s - t).pow(2).mean() for s, t in self.pairs(feats_s, feats_t)]).sum()
        return loss, {"loss": loss.detach().clone()}
