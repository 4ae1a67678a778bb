"""OpenGait interoperability: the model registry, building a model from an OpenGait config, loading OpenGait weights.

``from_opengait`` translates OpenGait's ``model_cfg`` (plus ``data_cfg.dataset_name``, which GaitGL's architecture
depends on) into constructor arguments; unknown keys are rejected rather than silently ignored.
``load_opengait_weights`` accepts a state_dict, OpenGait's checkpoint ``{"model": ...}`` or a Lightning checkpoint
of ours ``{"state_dict": {"student.<name>": ...}}``, and reports every mismatch at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .deepgaitv2 import DeepGaitV2, deepgaitv2_kwargs
from .gaitbase import GaitBase, gaitbase_kwargs
from .gaitgl import GaitGL
from .gaitpart import GaitPart, gaitpart_kwargs
from .gaitset import GaitSet

MODELS: dict[str, type[nn.Module]] = {
    "GaitSet": GaitSet,
    "GaitGL": GaitGL,
    "GaitPart": GaitPart,
    "Baseline": GaitBase,
    "GaitBase": GaitBase,  # alias: the model's published name
    "DeepGaitV2": DeepGaitV2,
}

DEFAULT_DATASET = "CASIA-B"


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by its (OpenGait) class name, e.g. ``build_model("GaitGL", class_num=74)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def _check_keys(model_cfg: Mapping, known: set[str], model: str) -> None:
    unknown = sorted(set(model_cfg) - known - {"model"})
    if unknown:
        raise ValueError(f"model_cfg key(s) {unknown} not understood for {model}; known keys: {sorted(known)}")


def _require(model_cfg: Mapping, key: str, model: str) -> Any:
    if key not in model_cfg:
        raise ValueError(f"model_cfg for {model} is missing required key {key!r}")
    return model_cfg[key]


def _gaitset_kwargs(model_cfg: Mapping, dataset_name: str) -> dict:
    _check_keys(model_cfg, {"in_channels", "SeparateFCs", "bin_num"}, "GaitSet")
    in_channels = [int(c) for c in _require(model_cfg, "in_channels", "GaitSet")]
    bin_num = [int(b) for b in model_cfg.get("bin_num", (16, 8, 4, 2, 1))]
    fcs = dict(_require(model_cfg, "SeparateFCs", "GaitSet"))
    _check_keys(fcs, {"in_channels", "out_channels", "parts_num", "norm"}, "GaitSet.SeparateFCs")
    # GaitSet's head sees HPP of two branches of the last block: these values are implied, so check them.
    implied = {"in_channels": in_channels[-1], "parts_num": 2 * sum(bin_num)}
    for key, value in implied.items():
        if key in fcs and int(fcs[key]) != value:
            raise ValueError(f"GaitSet model_cfg SeparateFCs.{key}={fcs[key]} but the network implies {value}")
    return {
        "in_channels": in_channels,
        "out_channels": int(_require(fcs, "out_channels", "GaitSet.SeparateFCs")),
        "bin_num": bin_num,
        "norm": bool(fcs.get("norm", False)),
    }


def _gaitgl_kwargs(model_cfg: Mapping, dataset_name: str) -> dict:
    _check_keys(model_cfg, {"channels", "class_num", "SeparateBNNecks"}, "GaitGL")
    kwargs: dict[str, Any] = {
        "channels": [int(c) for c in _require(model_cfg, "channels", "GaitGL")],
        "class_num": int(_require(model_cfg, "class_num", "GaitGL")),
        "dataset_name": dataset_name,
    }
    if "SeparateBNNecks" in model_cfg:
        kwargs["bnnecks"] = dict(model_cfg["SeparateBNNecks"])
    return kwargs


_TRANSLATORS: dict[str, Callable[[Mapping, str], dict]] = {
    "GaitSet": _gaitset_kwargs,
    "GaitGL": _gaitgl_kwargs,
    "GaitPart": gaitpart_kwargs,
    "Baseline": gaitbase_kwargs,
    "GaitBase": gaitbase_kwargs,
    "DeepGaitV2": deepgaitv2_kwargs,
}


def from_opengait(config: Mapping, dataset_name: str | None = None) -> nn.Module:
    """Build a model from a whole OpenGait config (``model_cfg``, ``data_cfg``, ...) or from its ``model_cfg``.

    The dataset name (GaitGL's branch) is ``dataset_name`` if given, else ``data_cfg.dataset_name``, else CASIA-B.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"OpenGait config must be a mapping, got {type(config).__name__}")
    model_cfg = config.get("model_cfg", config)
    if dataset_name is None:
        dataset_name = (config.get("data_cfg") or {}).get("dataset_name", DEFAULT_DATASET)
    name = model_cfg.get("model")
    if name not in _TRANSLATORS:
        raise ValueError(f"model_cfg.model={name!r} is not supported; known models: {sorted(_TRANSLATORS)}")
    return MODELS[name](**_TRANSLATORS[name](model_cfg, str(dataset_name)))


def _extract_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """The model weights inside a state_dict / OpenGait checkpoint / Lightning checkpoint (``student.`` stripped)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state_dict or checkpoint dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):  # OpenGait: {"model", "optimizer", "iteration", ...}
        return dict(obj["model"])
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):  # Lightning checkpoint of a KD module
        state = obj["state_dict"]
        prefix = "student."
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        return dict(state)
    return dict(obj)


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, Tensor) else f"<{type(value).__name__}, not a tensor>"


def load_opengait_weights(model: nn.Module, state_dict_or_path: Mapping | str | os.PathLike) -> nn.Module:
    """Load OpenGait-named weights into ``model`` (strict). Returns the model.

    Raises one ``ValueError`` listing missing keys, unexpected keys and shape mismatches, or naming the first
    non-finite tensor.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        source = os.fspath(state_dict_or_path)
        obj = torch.load(source, map_location="cpu", weights_only=True)
    else:
        source, obj = "state_dict", state_dict_or_path
    state = _extract_state_dict(obj, source)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {_shape(state[k])} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if _shape(state[k]) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"cannot load {source} into {type(model).__name__}:\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
            f"  shape mismatches ({len(shapes)}): {shapes}"
        )
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{source}: weight {key!r} contains NaN or Inf values")
    model.load_state_dict(state, strict=True)
    return model
