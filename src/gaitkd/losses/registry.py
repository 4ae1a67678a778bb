"""Name -> loss class registry. Losses are small, pure ``nn.Module``s built from config by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

LOSSES: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a loss buildable as ``build_loss(name, **hparams)``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSSES:
            raise ValueError(f"loss name {name!r} registered twice ({LOSSES[name].__name__}, {cls.__name__})")
        LOSSES[name] = cls
        return cls

    return deco


def build_loss(name: str, **hparams) -> nn.Module:
    """Build a registered loss; unknown names list what exists."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; registered: {sorted(LOSSES)}")
    return LOSSES[name](**hparams)
