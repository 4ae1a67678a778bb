"""``EmbeddingCollector``: a torchmetrics Metric that gathers test embeddings across processes.

Each rank feeds ``(embeddings, dataset index)`` batches; the list states are all-gathered with
``dist_reduce_fx="cat"``. ``compute()`` sorts by dataset index and drops repeated indices (a
``DistributedSampler`` pads the last batch by repeating samples), so the result is the same whatever the
world size or sampler order, and it lines up with the dataset's labels / types / views.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class EmbeddingCollector(Metric):
    """Collects ``[B, C, P]`` embeddings keyed by dataset index; ``compute()`` -> ``([M, C, P] float32, [M] long)``.

    ``kwargs`` go to ``torchmetrics.Metric`` (e.g. ``compute_on_cpu=True`` to keep states in host memory).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, index: torch.Tensor) -> None:
        """Store a batch: ``embeddings [B, C, P]`` and ``index [B]`` (dataset index of each sequence)."""
        if embeddings.dim() != 3:
            raise ValueError(f"EmbeddingCollector.update: embeddings must be [B, C, P], got {tuple(embeddings.shape)}")
        index = torch.as_tensor(index, device=embeddings.device)
        if index.dim() != 1 or index.shape[0] != embeddings.shape[0] or index.is_floating_point():
            raise ValueError(
                f"EmbeddingCollector.update: index must be an integer tensor [B={embeddings.shape[0]}], "
                f"got {index.dtype} {tuple(index.shape)}"
            )
        if self.embeddings and self.embeddings[0].shape[1:] != embeddings.shape[1:]:
            raise ValueError(
                f"EmbeddingCollector.update: [C, P] changed from {tuple(self.embeddings[0].shape[1:])} "
                f"to {tuple(embeddings.shape[1:])}"
            )
        self.embeddings.append(embeddings.detach().to(torch.float32))
        self.index.append(index.detach().to(torch.long))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All gathered samples sorted by index, first occurrence of each index kept.

        Returns:
            ``embeddings [M, C, P]`` float32 and ``index [M]`` long (strictly increasing).
        """
        if isinstance(self.index, list) and not self.index:
            raise RuntimeError("EmbeddingCollector.compute() called before any update()")
        # After a DDP sync a rank without data contributes an empty float placeholder; the cast restores long.
        index = dim_zero_cat(self.index).to(torch.long)
        embeddings = dim_zero_cat(self.embeddings)
        index, order = torch.sort(index, stable=True)  # stable: repeated indices keep their gathering order
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return embeddings[order[first]], index[first]
