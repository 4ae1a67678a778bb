"""What every benchmark section shares: timed repeats after warm-up, their statistics, figures, the machine.

A *figure* is one measured quantity with the bound it is read against, both measured in the same run::

    {"section", "name", "unit", "value": stats, "bound": stats | None, "bound_name", "ratio", "target", "extra"}

where ``stats = {"median", "min", "max", "n", "runs"}`` and ``ratio = value.median / bound.median``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gaitkd.run import CONF_DIR

# Every step section trains on one random batch again and again: at the configured SGD lr 0.1 the weights
# diverge within a few steps (NaN, and slow denormal arithmetic before that), so the benches use lr 1e-3.
BENCH_OVERRIDES = ["optimizer.lr=0.001"]


def make_batch(p: int, k: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``sils [P*K, T, 64, 44]`` random silhouettes and ``labels`` (K sequences of each of P ids)."""
    gen = torch.Generator().manual_seed(seed)
    return {"sils": torch.rand(p * k, frames, 64, 44, generator=gen), "labels": torch.arange(p).repeat_interleave(k)}


def timed_runs(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_runs(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of ``repeats`` calls of every function, called in turn (one of each per round), so that the
    slow drifts of a shared machine affect them alike; ``warmup`` untimed rounds first."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                runs[name].append(time.perf_counter() - start)
    return runs


def stats(runs: list[float]) -> dict[str, Any]:
    """Median, min, max and count of timed runs (the runs themselves kept for the record)."""
    runs = [float(r) for r in runs]
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "n": len(runs), "runs": runs}


def figure(section: str, name: str, value: list[float] | dict, unit: str = "s", bound: list[float] | dict | None = None,
           bound_name: str | None = None, target: float | None = None, **extra: Any) -> dict[str, Any]:
    """One figure; ``value`` / ``bound`` are timed runs or ``stats``; the ratio is of the medians."""
    value = value if isinstance(value, dict) else stats(value)
    bound = bound if isinstance(bound, dict) or bound is None else stats(bound)
    ratio = value["median"] / bound["median"] if bound and bound["median"] > 0 else None
    return {"section": section, "name": name, "unit": unit, "value": value, "bound": bound, "bound_name": bound_name,
            "ratio": ratio, "target": target, "extra": extra}


def compose_run(overrides: list[str], out_dir: str = ".") -> DictConfig:
    """``conf/run.yaml`` composed with ``BENCH_OVERRIDES`` and then ``overrides``; outputs into ``out_dir``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("run", overrides=[*BENCH_OVERRIDES, *overrides, f"paths.output_dir={out_dir}"])


def batch_parser(doc: str, p: int | None = 4, repeats: int = 5) -> argparse.ArgumentParser:
    """The command line of a step benchmark: ``--p`` ids x ``--k`` sequences x ``--frames``, ``--repeats``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=p, help="ids per batch")
    parser.add_argument("--k", type=int, default=2, help="sequences per id")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls (median, min, max)")
    return parser


def cpu_model() -> str | None:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def machine() -> dict[str, Any]:
    """Cores, CPU model, torch version and threads, Python, platform."""
    return {"cores": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "python": platform.python_version(), "platform": platform.platform()}
