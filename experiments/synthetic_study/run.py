"""The GaitKD study on synthetic CASIA-B (issue 8): two teachers trained once, then every student × variant × seed.

    .venv/bin/python experiments/synthetic_study/run.py              # everything (resumes: finished runs are kept)
    .venv/bin/python experiments/synthetic_study/run.py --dry-run    # print the commands only
    .venv/bin/python experiments/synthetic_study/run.py --only gaitset --seeds 0 -- trainer.max_steps=50

Every run is one ordinary ``python -m gaitkd.run`` command (printed) into ``outputs/synthetic_study/<group>/<name>``;
a run whose ``metrics.json`` exists is skipped, so an interrupted study continues where it stopped. What a result
needs to be checked is copied to ``experiments/synthetic_study/results/runs/<group>/<name>/`` (small, committed):
``metrics.json``, ``per_view.json`` and Hydra's ``.hydra/{config,overrides}.yaml`` (the full resolved config and the
command-line overrides, seed included), plus ``wall_seconds``. ``report.py`` turns those into the tables and plots.
Extra overrides after ``--`` go to every run (e.g. ``data=casia_b data.root=...`` for the real dataset).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = REPO / "outputs" / "synthetic_study"
RESULTS = HERE / "results" / "runs"
SEEDS = (0, 1, 2)
PRESET = "+preset=study"  # after +experiment=...: the study's data, batch, optimizer and step count

# name -> overrides; each teacher is trained once (seed 0) on the training identities, as a student would be.
TEACHERS = {
    "gaitgl": ["+experiment=train_gaitgl", PRESET, "student=gaitgl_lite", "trainer.max_steps=1500"],
    "gaitbase": ["+experiment=train_gaitset", PRESET, "student=gaitbase_lite", "trainer.max_steps=1500"],
}
STUDENTS = {"gaitset": "gaitset_lite", "gaitpart": "gaitpart_lite"}
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
                     "teacher@teachers.gaitbase=gaitbase_lite", "teachers.gaitbase.ckpt={gaitbase}"],
}


def teacher_ckpt(name: str) -> Path:
    return OUT / "teachers" / name / "checkpoints" / "last.ckpt"


def plan(only: list[str] | None, seeds: list[int]) -> list[tuple[str, str, list[str]]]:
    """``(group, run name, overrides)`` in execution order: teachers first, then students seed-major (every
    variant of seed 0 first, so a partial study already has comparable rows)."""
    runs = [("teachers", name, [*ov, "+variant=teacher"]) for name, ov in TEACHERS.items()]
    ckpts = {name: str(teacher_ckpt(name)) for name in TEACHERS}
    for seed in seeds:
        for student, config in STUDENTS.items():
            if only and student not in only:
                continue
            variants = {**VARIANTS, **(GAITSET_ONLY if student == "gaitset" else {})}
            for variant, ov in variants.items():
                experiment = next((o for o in ov if o.startswith("+experiment=")), "+experiment=gaitgl_to_gaitset")
                rest = [o.format(**ckpts) for o in ov if o != experiment]
                runs.append((student, f"{variant}/seed{seed}", [
                    experiment, PRESET, f"student={config}", "teacher=gaitgl_lite", f"teacher.ckpt={ckpts['gaitgl']}",
                    *rest, f"seed={seed}", f"+variant={variant}"]))
    return runs


def run_one(group: str, name: str, overrides: list[str], extra: list[str], dry_run: bool) -> float | None:
    """Run (or skip, if finished) one job; returns its wall time, ``None`` when skipped."""
    out = OUT / group / name
    cmd = [sys.executable, "-m", "gaitkd.run", "data=synthetic", *overrides, *extra, "resume=never",
           f"hydra.run.dir={out}"]
    print(("# done: " if (out / "metrics.json").is_file() else "$ ") + " ".join(cmd[1:]), flush=True)
    if dry_run or (out / "metrics.json").is_file():
        return None
    shutil.rmtree(out, ignore_errors=True)  # a run killed half-way starts again from scratch, same seed
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.perf_counter() - start
    keep = RESULTS / group / name
    (keep / ".hydra").mkdir(parents=True, exist_ok=True)
    for rel in ("metrics.json", "per_view.json", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        if (out / rel).is_file():
            shutil.copy2(out / rel, keep / rel)
    (keep / "wall_seconds").write_text(f"{wall:.1f}\n")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(STUDENTS), help="students to run (teachers always)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("extra", nargs="*", help="overrides for every run (after --)")
    args = parser.parse_args()
    start, done = time.perf_counter(), 0
    for group, name, overrides in plan(args.only, args.seeds):
        wall = run_one(group, name, overrides, args.extra, args.dry_run)
        if wall is not None:
            done += 1
            print(f"# {group}/{name}: {wall:.0f} s ({done} runs, {(time.perf_counter() - start) / 60:.1f} min)",
                  flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    summary = HERE / "results" / "compute.json"
    if not args.dry_run and done:
        walls = {str(p.parent.relative_to(RESULTS)): float(p.read_text()) for p in RESULTS.rglob("wall_seconds")}
        summary.write_text(json.dumps({"runs": len(walls), "total_minutes": sum(walls.values()) / 60,
                                       "wall_seconds": walls}, indent=2))


if __name__ == "__main__":
    main()
