"""Gait recognition models (OpenGait-compatible) and the public model API.

``MODELS`` / ``build_model`` (Hydra: ``_target_: gaitkd.models.build_model``), ``from_opengait`` (OpenGait config),
``load_opengait_weights`` (OpenGait / Lightning checkpoints) and ``count_params``.
"""

from __future__ import annotations

from torch import nn

from .deepgaitv2 import DeepGaitV2
from .gaitbase import GaitBase
from .gaitgl import GaitGL
from .gaitpart import GaitPart
from .gaitset import GaitSet
from .opengait import MODELS, build_model, from_opengait, load_opengait_weights
from .output import GaitOutput


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded), as OpenGait's ``param_counts.total``."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MODELS",
    "DeepGaitV2",
    "GaitBase",
    "GaitGL",
    "GaitOutput",
    "GaitPart",
    "GaitSet",
    "build_model",
    "count_params",
    "from_opengait",
    "load_opengait_weights",
]
