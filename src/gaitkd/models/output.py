"""The one typed output every gait model returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from torch import Tensor


@dataclass
class GaitOutput:
    """What a gait model returns.

    embeddings:          ``[N, C, P]`` part-wise embedding that OpenGait evaluates (``inference_feat``).
    logits:              ``[N, K, P]`` part-wise class logits, or ``None`` for models without a classifier.
    triplet_embeddings:  ``[N, C, P]`` embedding the triplet loss / boundary KD use when it differs from
                         ``embeddings`` (e.g. DeepGaitV2 with ``use_emb2``); ``None`` means "same".
    """

    embeddings: Tensor
    logits: Tensor | None = None
    triplet_embeddings: Tensor | None = None

    @property
    def train_embeddings(self) -> Tensor:
        """The embedding used by training losses (triplet, boundary KD)."""
        return self.embeddings if self.triplet_embeddings is None else self.triplet_embeddings

    def map(self, fn: Callable[[Tensor], Tensor]) -> GaitOutput:
        """Apply ``fn`` to every tensor (e.g. ``Tensor.clone`` to turn inference-mode outputs into normal tensors)."""
        return GaitOutput(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                             for f in fields(self)})
