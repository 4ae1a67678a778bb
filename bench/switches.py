"""Speed switches (``perf.*`` in ``conf/run.yaml``, see ``gaitkd.perf``) against the defaults, in one run.

    PYTHONPATH=src .venv/bin/python bench/switches.py --experiment gaitgl_to_gaitset --p 4 --k 2 --frames 10

Every variant is the KD step of one experiment (``bench/kd_step.py``: ``training_step`` + backward + optimizer
step) with one switch changed, built from the same weights (the same random teacher checkpoints, the same student
seed). Per variant:

- *exactness*: max abs difference to the defaults of the student's training embeddings, every teacher's outputs
  and the training loss, on the same batch before any update;
- *warm-up*: wall time of that first forward + loss and the first step (where ``torch.compile`` compiles);
- *step*: median / min / max of ``--repeats`` steps after one more warm-up round, all variants stepped in turn
  (one step of each per round); ratio = variant step / default step.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from common import batch_parser, figure, interleaved_runs, make_batch
from gaitkd.module import TEACHER_PREFIX
from kd_step import compose_run, make_module, random_teachers, step_fn

# name -> perf overrides; the first is the reference
VARIANTS = {
    "defaults": [],
    "channels_last": ["perf.channels_last=true"],
    "compile_student": ["perf.compile_student=true"],
    "compile_teacher": ["perf.compile_teacher=true"],
    "teacher_autocast_bf16": ["perf.teacher_autocast=bf16"],
    "teacher_no_grad": ["perf.teacher_grad_mode=no_grad"],
}


def outputs(module, batch: dict) -> dict[str, torch.Tensor]:
    """What a training step computes before the update: student embeddings, teacher outputs, the loss."""
    sils = batch["sils"]
    found = {"student": module._forward("student", module.student, module.perf.compile_student)(sils)
             .train_embeddings.detach()}
    for name, model in module.teachers.items():
        forward = module._forward(TEACHER_PREFIX + name, model, module.perf.compile_teacher)
        with module.perf.teacher_context("cpu"):
            out = forward(sils)
        found[f"teacher {name} embeddings"] = out.embeddings.float().clone()
        if out.logits is not None:
            found[f"teacher {name} logits"] = out.logits.float().clone()
    found["loss"] = module.training_step(batch, 0).detach()
    return found


def prepare(overrides: list[str], batch: dict, teacher_dir: Path) -> tuple[dict, object, float]:
    """Build one variant; (its outputs before any update, its step function, warm-up seconds)."""
    p = int(batch["labels"].max()) + 1
    cfg = compose_run(overrides)
    torch.manual_seed(0)
    teachers = random_teachers(cfg, p, teacher_dir)  # same seed, same folder: the same weights every variant
    torch.manual_seed(0)
    module = make_module(cfg, p, teachers).train()
    start = time.perf_counter()
    found = outputs(module, batch)
    step = step_fn(module, batch)
    step()
    return found, step, time.perf_counter() - start


def run(experiment: str = "gaitgl_to_gaitset", p: int = 4, k: int = 2, frames: int = 10, repeats: int = 5,
        variants=tuple(VARIANTS), overrides=(), log=print) -> list[dict]:
    """One figure per variant (the reference included, ratio 1 by definition); ``overrides`` apply to all.
    All variants are built and warmed up first, then their steps are timed in turn (one of each per round).
    ``torch.compile`` gets an empty inductor cache, so its warm-up is the compile time of a first run."""
    batch = make_batch(p, k, frames)
    names = ["defaults", *[v for v in variants if v != "defaults"]]
    found, steps, warm = {}, {}, {}
    cache_env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        try:
            for name in names:
                found[name], steps[name], warm[name] = prepare(
                    [f"+experiment={experiment}", *overrides, *VARIANTS[name]], batch, Path(tmp))
                log(f"  switch {name:>22}: built, warm-up {warm[name]:.1f} s")
            runs = interleaved_runs(steps, repeats)
        finally:
            if cache_env is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_env
    figures, reference = [], found["defaults"]
    for name in names:
        diffs = {key: float((value - reference[key]).abs().max()) for key, value in found[name].items()}
        rel = {key: diffs[key] / max(float(reference[key].abs().max()), 1e-30) for key in diffs}
        fig = figure("switches", name, runs[name], bound=runs["defaults"], bound_name="KD step, perf defaults",
                     overrides=VARIANTS[name], experiment=experiment, batch=p * k, frames=frames,
                     overrides_all=list(overrides), warmup_s=warm[name], max_abs_diff=diffs, max_rel_diff=rel,
                     exact=max(diffs.values()) == 0.0)
        figures.append(fig)
        log(f"  switch {name:>22}: step {fig['value']['median']:.3f} s = {fig['ratio']:.3f} x defaults, "
            f"max |diff| {max(diffs.values()):.1e} (relative {max(rel.values()):.1e})")
    return figures


def channels_last_per_model(models, sizes: dict, repeats: int = 5, log=print) -> list[dict]:
    """``channels_last`` vs the defaults on each model's own training step (no teacher): where does it win?

    ``sizes``: model -> (P, K, frames), as the framework section. Figures are named ``channels_last <model>``."""
    figures = []
    for model in models:
        p, k, frames = sizes[model]
        log(f"  channels_last on the {model} student step ({p}x{k}x{frames})")
        for fig in run("train_gaitset", p, k, frames, repeats, ("defaults", "channels_last"),
                       [f"student={model}"], log=log):
            if fig["name"] == "channels_last":
                fig["name"], fig["bound_name"] = f"channels_last {model}", "student step, perf defaults"
                figures.append(fig)
    return figures


def main() -> None:
    parser = batch_parser(__doc__)
    parser.add_argument("--experiment", default="gaitgl_to_gaitset")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    run(args.experiment, args.p, args.k, args.frames, args.repeats, args.variants)


if __name__ == "__main__":
    main()
