"""OpenGait's batch-all triplet loss, computed independently per horizontal part."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaitkd.losses.registry import register


def part_distances(x: Tensor) -> Tensor:
    """Per-part Euclidean distance matrix with OpenGait's expanded float32 formula.

    x: ``[P, N, C]`` -> ``[P, N, N]``. ``sqrt(relu(.))`` (not ``clamp``) keeps the gradient finite (0) where the
    squared distance rounds to <= 0, e.g. on the diagonal.
    """
    sq = x.pow(2).sum(-1)  # [P, N]
    d2 = sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * x.matmul(x.transpose(1, 2))
    return torch.sqrt(F.relu(d2))


@register("triplet")
class TripletLoss(nn.Module):
    """Batch-all triplet loss averaged over the non-zero terms, one value per part.

    For each part and anchor i, every positive a (same label, i itself included) is paired with every
    negative n: ``relu(D[i,a] - D[i,n] + margin)``. Works for any label multiset (unequal class counts too).
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict]:
        """embeddings ``[N, C, P]``, labels ``[N]`` -> loss ``[P]`` and info of ``[P]`` tensors."""
        if embeddings.dim() != 3 or labels.dim() != 1 or labels.numel() != embeddings.size(0):
            raise ValueError(
                f"TripletLoss expects embeddings [N, C, P] and labels [N]; got {tuple(embeddings.shape)} "
                f"and {tuple(labels.shape)}"
            )
        dist = part_distances(embeddings.permute(2, 0, 1).float())  # [P, N, N]
        same = labels.unsqueeze(1) == labels.unsqueeze(0)  # [N, N]
        anchor, pos = same.nonzero(as_tuple=True)  # every (anchor, positive) pair, [M]
        ap = dist[:, anchor, pos].unsqueeze(-1)  # [P, M, 1]
        an = dist[:, anchor, :]  # [P, M, N]: anchor -> every sample, masked to negatives below
        terms = F.relu(ap - an + self.margin) * (~same[anchor]).to(dist.dtype)  # [P, M, N]
        terms = terms.flatten(1)
        loss_num = (terms != 0).sum(-1).to(dist.dtype)
        loss = terms.sum(-1) / (loss_num + 1e-9)
        loss = torch.where(loss_num == 0, torch.zeros_like(loss), loss)
        info = {
            "loss": loss.detach().clone(),
            "hard_loss": terms.detach().max(-1).values,
            "loss_num": loss_num.detach(),
            "mean_dist": dist.detach().mean((1, 2)),
        }
        return loss, info
