"""KD step overhead: time(KD step) / (time(student step) + time(teacher forwards)), measured in one run.

    .venv/bin/python bench/kd_step.py --experiments gaitgl_to_gaitset two_teachers --p 4 --k 2 --frames 10
    .venv/bin/python bench/kd_step.py --pairs gaitgl:gaitset gaitpart:gaitgl          # teacher:student, distill=gaitkd

A configuration is built as a training run builds it (``gaitkd.run.build_teacher`` / ``build_module``) with
randomly initialised teachers saved as checkpoints. The student step and the KD step are the LightningModule's own
``training_step`` + backward + optimizer (+ scheduler) step, no Trainer (``bench/framework.py`` measures the
Trainer); each teacher forward runs as in training (``perf.teacher_context``: ``inference_mode`` by default).
Each figure is the median of ``--repeats`` timed calls after one warm-up, the three called in turn. A ratio of
1.00 means the KD branches cost nothing beyond the forwards.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from common import batch_parser, compose_run, figure, interleaved_runs, make_batch, stats, timed_runs
from gaitkd.distill.branch import probe_shape
from gaitkd.models import count_params
from gaitkd.module import GaitKDModule
from gaitkd.run import build_model, build_module, build_teacher
from gaitkd.teacher_config import teacher_configs

EXPERIMENTS = ("gaitgl_to_gaitset", "two_teachers")


def median_seconds(fn, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls after one warm-up call."""
    return statistics.median(timed_runs(fn, repeats))


def make_module(cfg: DictConfig, num_classes: int, teachers: dict | None = None) -> GaitKDModule:
    """The module a training run builds from ``cfg`` (``build_module``), usable without a Trainer."""
    module = build_module(cfg, num_classes, teachers or {})
    module.log = lambda *a, **k: None  # no Trainer attached
    return module


def step_fn(module: GaitKDModule, batch: dict):
    """One training step without a Trainer: ``training_step`` + backward + optimizer step (+ scheduler step)."""
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    return step


def random_teachers(cfg: DictConfig, num_classes: int, folder: Path) -> dict:
    """Every configured teacher with random weights, saved to ``folder`` and loaded as a run loads a checkpoint.
    A teacher without a classifier has its decision-level term switched off (it cannot teach through logits)."""
    nodes = {"teacher": cfg.teacher} if "model" in cfg.teacher else {}
    nodes.update({f"teachers.{name}": node for name, node in (cfg.get("teachers") or {}).items()})
    with open_dict(cfg):
        for key, node in nodes.items():
            model = build_model(node.model, num_classes)
            node.ckpt = str(folder / f"{key}.pt")
            torch.save({"model": model.state_dict()}, node.ckpt)
            if probe_shape(model).classes is None:
                if key == "teacher":
                    cfg.distill.decision = None
                else:
                    node.distill = {**(node.get("distill") or {}), "decision": None}
    return {name: build_teacher(tc, num_classes) for name, tc in teacher_configs(cfg).items()}


def bench_config(name: str, overrides: list[str], p: int, k: int, frames: int, repeats: int) -> dict:
    """KD-step figure of one configuration (``overrides`` of ``conf/run.yaml``)."""
    batch = make_batch(p, k, frames)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run(overrides)
        torch.manual_seed(0)
        teachers = random_teachers(cfg, p, Path(tmp))
        torch.manual_seed(0)
        plain = make_module(cfg, p).train()
        torch.manual_seed(0)
        kd = make_module(cfg, p, teachers).train()

    def teacher_forwards() -> None:
        for model in kd.teachers.values():
            with kd.perf.teacher_context("cpu"):
                model(batch["sils"])

    runs = interleaved_runs({"student": step_fn(plain, batch), "teacher": teacher_forwards,
                             "kd": step_fn(kd, batch)}, repeats)
    student, teacher, kd_runs = runs["student"], runs["teacher"], runs["kd"]
    bound = [s + t for s, t in zip(sorted(student), sorted(teacher))]  # medians add: sorted runs pair up
    return figure("kd_step", name, kd_runs, bound=stats(bound), bound_name="student step + teacher forward(s)",
                  target=1.05, teachers={n: type(m).__name__ for n, m in kd.teachers.items()},
                  student=type(kd.student).__name__, batch=p * k, frames=frames,
                  student_params=count_params(kd.student),
                  teacher_params={n: count_params(m) for n, m in kd.teachers.items()},
                  student_step=stats(student), teacher_forward=stats(teacher))


def run(experiments=EXPERIMENTS, pairs=(), p: int = 4, k: int = 2, frames: int = 10, repeats: int = 3,
        overrides=(), log=print) -> list[dict]:
    """One figure per experiment of ``conf/experiment`` and per ``teacher:student`` pair (``distill=gaitkd``);
    ``overrides`` are applied after the experiment (e.g. narrower models for a smoke run)."""
    configs = [(exp, [f"+experiment={exp}", *overrides]) for exp in experiments]
    configs += [(pair, [f"student={pair.split(':')[1]}", f"teacher={pair.split(':')[0]}", "distill=gaitkd"])
                for pair in pairs]
    figures = []
    for name, overrides in configs:
        fig = bench_config(name, overrides, p, k, frames, repeats)
        figures.append(fig)
        ex = fig["extra"]
        log(f"  kd_step {name:>20}: student {ex['student_step']['median']:.3f} s + teacher fwd "
            f"{ex['teacher_forward']['median']:.3f} s; KD {fig['value']['median']:.3f} s = {fig['ratio']:.3f}")
    return figures


def main() -> None:
    parser = batch_parser(__doc__, repeats=3)
    parser.add_argument("--experiments", nargs="*", default=list(EXPERIMENTS), help="conf/experiment names")
    parser.add_argument("--pairs", nargs="*", default=[], help="teacher:student config names (distill=gaitkd)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kd_step.json")
    args = parser.parse_args()
    figures = run(args.experiments, args.pairs, args.p, args.k, args.frames, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps({"meta": meta, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
