"""Export the student alone: no teacher, no connector, no training-only classifier.

``export_student(ckpt, out)`` rebuilds the plain student from the model config stored in a gaitkd checkpoint,
loads its weights, and writes a TorchScript module ``sils [N, T, H, W] -> embeddings [N, C, P]`` (plus ONNX when
the ``onnx`` extra is installed). The report compares it with the same architecture built plainly: parameters,
FLOPs (``torch.utils.flop_counter``) and CPU latency per sequence.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from gaitkd.errors import ConfigError
from gaitkd.models import count_params, from_opengait, load_opengait_weights
from gaitkd.module import STUDENT_CONFIG_KEY


class EmbeddingExport(nn.Module):
    """What is deployed: ``sils [N, T, H, W]`` (fixed-length batch; GaitGL needs T >= 3) -> ``embeddings [N, C, P]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, sils: Tensor) -> Tensor:
        return self.model(sils).embeddings


@dataclass
class ExportReport:
    path: str
    onnx_path: str | None
    params: int
    plain_params: int
    flops: int
    latency_ms: float
    plain_latency_ms: float
    frames: int
    latency_runs_ms: list[float] = field(default_factory=list)  # every timed call (ms per sequence)
    plain_latency_runs_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def student_config(ckpt: dict, source: str) -> dict:
    """The student's model config stored in a gaitkd checkpoint."""
    if STUDENT_CONFIG_KEY not in ckpt:
        raise ConfigError(f"{source} holds no student model config ({STUDENT_CONFIG_KEY!r}); export needs a "
                          "checkpoint written by `python -m gaitkd.run`")
    return dict(ckpt[STUDENT_CONFIG_KEY])


def load_student(path: str | Path) -> tuple[nn.Module, dict]:
    """The plain student of a gaitkd checkpoint, in eval mode, and its model config."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = student_config(ckpt, str(path))
    student = instantiate(config)
    load_opengait_weights(student, ckpt)
    return student.eval(), config


def count_flops(model: nn.Module, sils: Tensor) -> int:
    """FLOPs of one forward (``torch.utils.flop_counter``: matmuls and convolutions, 2 per multiply-add)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(sils)
    return int(counter.get_total_flops())


def latency_ms(fn: Callable[[Tensor], Any], sils: Tensor, repeats: int = 5) -> float:
    """Median wall time of ``fn(sils)`` per sequence in ms, after one warm-up call."""
    return statistics.median(latency_runs_ms(fn, sils, repeats))


def latency_runs_ms(fn: Callable[[Tensor], Any], sils: Tensor, repeats: int = 5) -> list[float]:
    """Wall time of each of ``repeats`` calls ``fn(sils)`` per sequence in ms, after one warm-up call."""
    with torch.no_grad():
        fn(sils)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(sils)
            times.append(1000.0 * (time.perf_counter() - start) / sils.shape[0])
    return times


def load_opengait_student(ckpt: str | Path, config: str | Path | dict) -> tuple[nn.Module, Callable[[], nn.Module]]:
    """A model from an OpenGait config (YAML path or dict) with the weights of an OpenGait checkpoint."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=True) if not isinstance(config, dict) else config
    model = from_opengait(cfg)
    load_opengait_weights(model, ckpt)
    return model.eval(), lambda: from_opengait(cfg)


def export_student(ckpt: str | Path, out: str | Path, frames: int = 30, size: tuple[int, int] = (64, 44),
                   onnx: bool = False, repeats: int = 5, opengait_config: str | Path | dict | None = None
                   ) -> ExportReport:
    """Export the student of a gaitkd checkpoint, or (with ``opengait_config``) an OpenGait checkpoint's model."""
    if opengait_config is not None:
        student, build_plain = load_opengait_student(ckpt, opengait_config)
    else:
        student, config = load_student(ckpt)
        build_plain = partial(instantiate, config)
    return export_model(student, build_plain, out, frames=frames, size=size, onnx=onnx, repeats=repeats)


def export_model(student: nn.Module, build_plain: Callable[[], nn.Module], out: str | Path, frames: int = 30,
                 size: tuple[int, int] = (64, 44), onnx: bool = False, repeats: int = 5) -> ExportReport:
    """Write ``student`` as TorchScript to ``out`` (and ``out.onnx`` if ``onnx``); compare with ``build_plain()``."""
    wrapped = EmbeddingExport(student.eval()).eval()
    sils = torch.rand(1, frames, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, sils, check_trace=False)
        expected = wrapped(sils)
        if not torch.allclose(traced(sils), expected, atol=1e-5, rtol=1e-5):
            raise RuntimeError("traced student does not reproduce the eager embeddings")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(out))
    exported = torch.jit.load(str(out))

    onnx_path = None
    if onnx:
        try:
            import onnx as _onnx  # noqa: F401  (the optional extra)
        except ImportError as err:
            raise ConfigError("ONNX export needs the `onnx` extra: pip install -e '.[onnx]'") from err
        onnx_path = str(out.with_suffix(".onnx"))
        torch.onnx.export(wrapped, (sils,), onnx_path, input_names=["sils"], output_names=["embeddings"],
                          dynamic_axes={"sils": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}})

    plain = EmbeddingExport(build_plain()).eval()
    runs, plain_runs = latency_runs_ms(exported, sils, repeats), latency_runs_ms(plain, sils, repeats)
    return ExportReport(
        path=str(out), onnx_path=onnx_path,
        params=sum(p.numel() for p in exported.parameters()), plain_params=count_params(plain),
        flops=count_flops(wrapped, sils),
        latency_ms=statistics.median(runs), plain_latency_ms=statistics.median(plain_runs),
        frames=frames, latency_runs_ms=runs, plain_latency_runs_ms=plain_runs,
    )
