"""OpenGait's part-wise (optionally label-smoothed) cross-entropy on scaled logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gaitkd.losses.registry import register


@register("ce")
class PartCrossEntropyLoss(nn.Module):
    """Cross-entropy of ``scale * logits`` over classes, the label repeated on every part, mean over N*P."""

    def __init__(self, scale: float = 16.0, label_smooth: bool = True, eps: float = 0.1, log_accuracy: bool = True):
        super().__init__()
        self.scale = float(scale)
        self.eps = float(eps) if label_smooth else 0.0
        self.log_accuracy = log_accuracy

    def forward(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict]:
        """logits ``[N, K, P]``, labels ``[N]`` -> scalar loss, info {loss, accuracy}."""
        if logits.dim() != 3 or labels.dim() != 1 or labels.numel() != logits.size(0):
            raise ValueError(
                f"PartCrossEntropyLoss expects logits [N, K, P] and labels [N]; got {tuple(logits.shape)} "
                f"and {tuple(labels.shape)}"
            )
        logits = logits.float()
        target = labels.unsqueeze(1).expand(-1, logits.size(2))  # [N, P]
        loss = F.cross_entropy(logits * self.scale, target, label_smoothing=self.eps)
        info = {"loss": loss.detach().clone()}
        if self.log_accuracy:
            info["accuracy"] = (logits.detach().argmax(1) == target).float().mean()
        return loss, info
