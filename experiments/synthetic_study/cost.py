"""What the study costs at ``--scale real`` (OpenGait's models and recipes on CASIA-B): an estimate from FLOPs.

    .venv/bin/python experiments/synthetic_study/cost.py                  # the real-scale study, 3 seeds
    .venv/bin/python experiments/synthetic_study/cost.py --tflops 10      # another sustained GPU throughput

No GPU is available here, so this is not a measurement. For every run of ``run.py --scale real`` it composes the
run's config, counts the forward FLOPs of one 30-frame 64x44 sequence of the student and of each teacher
(``torch.utils.flop_counter``: convolutions and matmuls), and prices a training step as 3x the student's forward
(forward + backward) plus each teacher's forward, for P x K sequences and ``trainer.max_steps`` steps, plus one
evaluation of the CASIA-B test set (5,500 sequences, ``--eval-frames`` frames each on average). GPU hours =
FLOPs / ``--tflops`` (the sustained rate assumed for these small-channel models; the default is a guess for one
A100-class GPU with fp16 autocast, not a figure measured anywhere). ``--cpu-gflops`` gives the same for this
machine's measured training throughput.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gaitkd.export import count_flops
from gaitkd.run import CONF_DIR
from gaitkd.teacher_config import teacher_configs

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("study_driver", HERE / "run.py")
driver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(driver)

TRAIN_IDS, TEST_SEQUENCES = 74, 5500  # CASIA-B: ids 001-074 train; 50 test ids x 10 types x 11 views


def forward_gflops(model_cfg, frames: int, cache: dict) -> float:
    """GFLOPs of one eval-mode forward of one ``frames``-frame 64x44 sequence (cached per model config)."""
    key = str(model_cfg)
    if key not in cache:
        cfg = dict(model_cfg)
        if "class_num" in cfg:
            cfg["class_num"] = TRAIN_IDS
        model = instantiate(cfg).eval()
        cache[key] = count_flops(model, torch.zeros(1, frames, 64, 44)) / 1e9
    return cache[key]


def run_cost(cfg, eval_frames: int, cache: dict) -> dict:
    """Training and evaluation GFLOPs of one composed run."""
    frames, batch = int(cfg.data.train_frames), int(cfg.data.batch_p) * int(cfg.data.batch_k)
    student = forward_gflops(cfg.student.model, frames, cache)
    # the teachers that take part, as the run decides it (a distill=none baseline builds and runs none)
    teacher = sum(forward_gflops(t.model, frames, cache) for t in teacher_configs(cfg).values())
    steps = int(cfg.trainer.max_steps)
    return {"steps": steps, "batch": batch, "student_gflops": student, "teacher_gflops": teacher,
            "train_gflop": steps * batch * (3 * student + teacher),
            "eval_gflop": TEST_SEQUENCES * student * eval_frames / frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(driver.SEEDS))
    parser.add_argument("--tflops", type=float, default=20.0, help="sustained GPU TFLOP/s assumed (default 20)")
    parser.add_argument("--cpu-gflops", type=float, default=70.0,
                        help="this machine's training GFLOP/s (default 70: GaitSet 8x4x30 step, ~8.7 s)")
    parser.add_argument("--eval-frames", type=int, default=90, help="mean frames per CASIA-B test sequence")
    args = parser.parse_args()
    cache: dict = {}
    total = 0.0
    print(f"{'run':<34}{'steps':>7}{'batch':>6}{'student':>9}{'teachers':>9}{'PFLOP':>8}{'GPU h':>7}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), tempfile.TemporaryDirectory() as tmp:
        for name in driver.TEACHERS:  # stand-in checkpoint files: the runs' teacher checks look for them
            driver.teacher_ckpt(Path(tmp), name).parent.mkdir(parents=True)
            driver.teacher_ckpt(Path(tmp), name).touch()
        for group, name, overrides in driver.plan(Path(tmp), None, args.seeds, "real"):
            cfg = compose("run", overrides=["data=casia_b", *overrides])
            cost = run_cost(cfg, args.eval_frames, cache)
            flop = (cost["train_gflop"] + cost["eval_gflop"]) * 1e9
            total += flop
            print(f"{group + '/' + name:<34}{cost['steps']:>7}{cost['batch']:>6}{cost['student_gflops']:>9.2f}"
                  f"{cost['teacher_gflops']:>9.2f}{flop / 1e15:>8.1f}{flop / args.tflops / 1e12 / 3600:>7.2f}")
    print(f"total {total / 1e18:.2f} EFLOP: ~{total / args.tflops / 1e12 / 3600:.0f} GPU hours at {args.tflops:g} "
          f"TFLOP/s sustained (an estimate); ~{total / args.cpu_gflops / 1e9 / 3600 / 24 / 365:.1f} years on this "
          f"2-core CPU at {args.cpu_gflops:g} GFLOP/s")


if __name__ == "__main__":
    main()
