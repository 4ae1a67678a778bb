"""KD step overhead: time(KD step) / (time(student step) + time(teacher forward)), measured in one run.

    .venv/bin/python bench/kd_step.py --pairs gaitgl:gaitset gaitgl_narrow:gaitset_small --p 4 --k 4 --frames 15

Each figure is the median of ``--repeats`` timed calls after one warm-up. The student step and the KD step are the
LightningModule's own ``training_step`` + backward + optimizer step (no Trainer); the teacher forward runs under
``torch.inference_mode`` as in training. A ratio of 1.00 means the KD branches cost nothing beyond the two forwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gaitkd.distill.branch import probe_shape
from gaitkd.models import count_params
from gaitkd.module import GaitKDModule
from gaitkd.run import CONF_DIR, _model_config


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_module(cfg, num_classes: int, teacher: torch.nn.Module | None) -> GaitKDModule:
    module = GaitKDModule(
        student=instantiate(_model_config(cfg.student.model, num_classes)), num_classes=num_classes,
        optimizer=partial(torch.optim.SGD, lr=1e-3, momentum=0.9), teacher=teacher,
        distill=OmegaConf.to_container(cfg.distill, resolve=True),
        student_head={k: cfg.student.get(k) for k in ("aux_classifier", "logit_scale", "label_smooth")},
        teacher_logit_scale=float(cfg.teacher.get("logit_scale", 1.0)),
    )
    module.log = lambda *a, **k: None  # no Trainer attached
    return module


def step_fn(module: GaitKDModule, batch: dict):
    optimizer = module.configure_optimizers()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        optimizer.step()

    return step


def bench_pair(teacher_name: str, student_name: str, args) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"student={student_name}", f"teacher={teacher_name}", "distill=gaitkd",
                                        "paths.output_dir=."])
    n = args.p * args.k
    batch = {"sils": torch.rand(n, args.frames, 64, 44), "labels": torch.arange(args.p).repeat_interleave(args.k)}
    teacher = instantiate(_model_config(cfg.teacher.model, args.p)).eval()
    if probe_shape(teacher).classes is None:  # GaitSet / GaitPart teach through the boundary branch only
        cfg.distill.decision = None
    plain = make_module(cfg, args.p, None).train()
    kd = make_module(cfg, args.p, teacher).train()

    def teacher_forward() -> None:
        with torch.inference_mode():
            teacher(batch["sils"])

    t_student = median_seconds(step_fn(plain, batch), args.repeats)
    t_teacher = median_seconds(teacher_forward, args.repeats)
    t_kd = median_seconds(step_fn(kd, batch), args.repeats)
    return {"teacher": teacher_name, "student": student_name, "batch": n, "frames": args.frames,
            "student_params": count_params(plain.student), "teacher_params": count_params(teacher),
            "student_step_s": t_student, "teacher_forward_s": t_teacher, "kd_step_s": t_kd,
            "ratio": t_kd / (t_student + t_teacher)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["gaitgl_narrow:gaitset_small", "gaitgl:gaitset"],
                        help="teacher:student config names")
    parser.add_argument("--p", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kd_step.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for pair in args.pairs:
        teacher, student = pair.split(":")
        row = bench_pair(teacher, student, args)
        rows.append(row)
        print(f"{teacher:>16} -> {student:<16} student {row['student_step_s']:.3f}s  teacher fwd "
              f"{row['teacher_forward_s']:.3f}s  KD {row['kd_step_s']:.3f}s  ratio {row['ratio']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "command": " ".join(__import__("sys").argv)}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
