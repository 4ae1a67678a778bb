"""The GaitKD study on synthetic CASIA-B (issue 8): two teachers trained once, then every student × variant × seed.

    .venv/bin/python experiments/synthetic_study/run.py --jobs 2     # everything (resumes: finished runs are kept)
    .venv/bin/python experiments/synthetic_study/run.py --dry-run    # print the commands only
    .venv/bin/python experiments/synthetic_study/run.py --only gaitset --seeds 0 -- trainer.max_steps=50

Every run is one ordinary ``python -m gaitkd.run`` command (printed) into ``outputs/synthetic_study/<group>/<name>``;
a run whose ``metrics.json`` exists is skipped, so an interrupted study continues where it stopped. What a result
needs to be checked is copied to ``experiments/synthetic_study/results/runs/<group>/<name>/`` (small, committed):
``metrics.json``, ``per_view.json`` and Hydra's ``.hydra/{config,overrides}.yaml`` (the full resolved config and the
command-line overrides, seed included), plus ``wall_seconds`` and ``concurrent_jobs`` (the runs sharing the machine
with it). ``report.py`` turns those into the tables and plots.
Extra overrides after ``--`` go to every run; on real CASIA-B (GPU-sized: OpenGait's models and recipes):
``--scale real --name casia_b_study -- data=casia_b data.root=/data/CASIA-B-pkl trainer=ddp`` (``--name`` keeps its
outputs and results apart from the synthetic study's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAME = "synthetic_study"  # outputs/<name>/ and, for another name, experiments/synthetic_study/results_<name>/
SEEDS = (0, 1, 2)
# study: the synthetic study's sizes (+preset=study after +experiment=...: data, batch, optimizer, steps) and thin
# models; real: OpenGait's models and the experiments' own recipes (GPU-sized: 40k-80k steps), for data=casia_b
SCALES = {
    "study": {"preset": ["+preset=study"], "teacher_steps": ["trainer.max_steps=1500"], "suffix": "_lite"},
    "real": {"preset": [], "teacher_steps": [], "suffix": ""},
}
# name -> (experiment, model config); each teacher is trained once (seed 0) on the training identities
TEACHERS = {"gaitgl": ("+experiment=train_gaitgl", "gaitgl"), "gaitbase": ("+experiment=train_gaitset", "gaitbase")}
STUDENTS = {"gaitset": "gaitset", "gaitpart": "gaitpart"}
# variant -> overrides on top of +experiment=gaitgl_to_gaitset with the student and the GaitGL teacher
VARIANTS = {
    "none": ["distill=none"],
    "decision_only": ["distill=decision_only"],
    "boundary_only": ["distill=boundary_only"],
    "gaitkd": ["distill=gaitkd"],
    "feat_mse": ["distill=feat_mse"],
    "kd": ["distill=kd"],
    "dkd": ["distill=dkd"],
}
GAITSET_ONLY = {  # the heterogeneous pair's part alignment, and GaitGL + GaitBase as two teachers
    "gaitkd_truncate": ["distill=gaitkd", "distill.part_align=truncate"],
    "two_teachers": ["+experiment=gaitgl_gaitbase_to_gaitset", "distill=gaitkd",
                     "teacher@teachers.gaitbase=gaitbase{suffix}", "teachers.gaitbase.ckpt={gaitbase}"],
}


def folders(name: str) -> tuple[Path, Path]:
    """(where the runs write, where their small result files are kept) of a study named ``name``."""
    return REPO / "outputs" / name, HERE / ("results" if name == NAME else f"results_{name}") / "runs"


def teacher_ckpt(out: Path, name: str) -> Path:
    return out / "teachers" / name / "checkpoints" / "last.ckpt"


def plan(out: Path, only: list[str] | None, seeds: list[int], scale: str = "study") -> list[tuple[str, str, list[str]]]:
    """``(group, run name, overrides)`` in execution order: teachers first, then students seed-major (every
    variant of seed 0 first, so a partial study already has comparable rows)."""
    size = SCALES[scale]
    preset, suffix = size["preset"], size["suffix"]
    runs = [("teachers", name, [experiment, *preset, f"student={model}{suffix}", *size["teacher_steps"],
                                "+variant=teacher"]) for name, (experiment, model) in TEACHERS.items()]
    ckpts = {name: str(teacher_ckpt(out, name)) for name in TEACHERS}
    for seed in seeds:
        for student, config in STUDENTS.items():
            if only and student not in only:
                continue
            variants = {**VARIANTS, **(GAITSET_ONLY if student == "gaitset" else {})}
            for variant, ov in variants.items():
                experiment = next((o for o in ov if o.startswith("+experiment=")), "+experiment=gaitgl_to_gaitset")
                rest = [o.format(suffix=suffix, **ckpts) for o in ov if o != experiment]
                runs.append((student, f"{variant}/seed{seed}", [
                    experiment, *preset, f"student={config}{suffix}", f"teacher=gaitgl{suffix}",
                    f"teacher.ckpt={ckpts['gaitgl']}", *rest, f"seed={seed}", f"+variant={variant}"]))
    return runs


def threads_per_job(jobs: int) -> int:
    """Intra-op threads each of ``jobs`` concurrent runs gets: the cores split evenly, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_one(folder: tuple[Path, Path], group: str, name: str, overrides: list[str], extra: list[str],
            dry_run: bool, jobs: int = 1) -> float | None:
    """Run (or skip, if finished) one job; returns its wall time, ``None`` when skipped. With ``jobs > 1`` runs
    share the machine: each gets its share of the cores and writes its console output to ``<run>/console.log``."""
    out, keep = folder[0] / group / name, folder[1] / group / name
    cmd = [sys.executable, "-m", "gaitkd.run", "data=synthetic", *overrides, *extra, "resume=never",
           f"hydra.run.dir={out}"]  # a data=... in extra replaces data=synthetic (the last override wins)
    print(("# done: " if (out / "metrics.json").is_file() else "$ ") + " ".join(cmd[1:]), flush=True)
    if dry_run or (out / "metrics.json").is_file():
        return None
    shutil.rmtree(out, ignore_errors=True)  # a run killed half-way starts again from scratch, same seed
    start = time.perf_counter()
    if jobs == 1:
        subprocess.run(cmd, check=True, cwd=REPO)
    else:
        out.mkdir(parents=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_job(jobs))}
        with open(out / "console.log", "w") as log:
            failed = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        if failed:
            raise RuntimeError(f"{group}/{name} failed (exit code {failed}); its output: {out / 'console.log'}")
    wall = time.perf_counter() - start
    (keep / ".hydra").mkdir(parents=True, exist_ok=True)
    for rel in ("metrics.json", "per_view.json", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        if (out / rel).is_file():
            shutil.copy2(out / rel, keep / rel)
    (keep / "wall_seconds").write_text(f"{wall:.1f}\n")
    (keep / "concurrent_jobs").write_text(f"{jobs}\n")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(STUDENTS), help="students to run (teachers always)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--scale", choices=list(SCALES), default="study",
                        help="study: synthetic sizes, thin models (default); real: OpenGait models and recipes "
                             "(with -- data=casia_b data.root=...)")
    parser.add_argument("--name", default=NAME, help="study name: outputs/<name>/, results_<name>/ (default: "
                                                       f"{NAME}, results/)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, the cores split between them (teachers first, then students); on 2 "
                             "CPU cores 2 jobs of 1 thread get ~13 %% more done than 1 job of 2 threads")
    parser.add_argument("extra", nargs="*", help="overrides for every run (after --)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    folder = folders(args.name)
    start, done, lock = time.perf_counter(), 0, threading.Lock()
    runs = plan(folder[0], args.only, args.seeds, args.scale)
    stages = [[r for r in runs if r[0] == "teachers"], [r for r in runs if r[0] != "teachers"]]  # students need both

    def one(run: tuple[str, str, list[str]]) -> None:
        nonlocal done
        group, name, overrides = run
        wall = run_one(folder, group, name, overrides, args.extra, args.dry_run, args.jobs)
        if wall is None:
            return
        with lock:
            done += 1
            print(f"# {group}/{name}: {wall:.0f} s ({done} runs, {(time.perf_counter() - start) / 60:.1f} min)",
                  flush=True)

    for stage in stages:
        with ThreadPoolExecutor(max_workers=1 if args.dry_run else args.jobs) as pool:  # dry run: in order
            list(pool.map(one, stage))  # list() re-raises the first failed run's error
    summary = folder[1].parent / "compute.json"
    if not args.dry_run and done:
        walls = {str(p.parent.relative_to(folder[1])): float(p.read_text()) for p in folder[1].rglob("wall_seconds")}
        summary.write_text(json.dumps({"runs": len(walls), "total_minutes": sum(walls.values()) / 60,
                                       "driver_minutes": (time.perf_counter() - start) / 60, "jobs": args.jobs,
                                       "wall_seconds": walls}, indent=2))


if __name__ == "__main__":
    main()
