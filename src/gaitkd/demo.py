"""`make demo`: GaitGL teacher, GaitSet baseline and GaitGL -> GaitSet (GaitKD) on the synthetic CASIA-B.

Each stage is one ordinary ``python -m gaitkd.run`` command (printed, so it can be rerun by hand); the
stages share the ``+preset=demo`` sizes. The table at the end is read from each run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[2]

# (title, output folder, overrides). Teacher: half-width GaitGL; student: quarter-width GaitSet (~5x fewer params).
# Baseline and GaitKD student share every setting but the distillation terms.
STAGES = [
    ("GaitGL (teacher)", "teacher", ["+experiment=train_gaitgl", "student=gaitgl_narrow", "trainer.max_steps=120"]),
    ("GaitSet (baseline)", "baseline", ["+experiment=train_gaitset", "student=gaitset_small"]),
    ("GaitSet + GaitKD", "gaitkd", ["+experiment=gaitgl_to_gaitset", "student=gaitset_small", "teacher=gaitgl_narrow"]),
]


def run_stage(args: list[str], out_dir: Path, console: Console) -> dict:
    cmd = [sys.executable, "-m", "gaitkd.run", "data=synthetic", *args[:1], "+preset=demo", *args[1:],
           f"hydra.run.dir={out_dir}"]
    console.print(f"[bold]$ {' '.join(cmd[1:])}")
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    return json.loads((out_dir / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "demo", help="output folder")
    args = parser.parse_args(argv)
    console = Console()
    start = time.perf_counter()
    rows = []
    for title, name, stage_args in STAGES:
        if name == "gaitkd":
            stage_args = [*stage_args, f"teacher.ckpt={args.out / 'teacher' / 'checkpoints' / 'last.ckpt'}"]
        rows.append((title, run_stage(stage_args, args.out / name, console)))
    wall = time.perf_counter() - start

    table = Table(title=f"GaitKD demo on synthetic CASIA-B (wall time {wall / 60:.1f} min)")
    for col in ("model", "params", "NM@R1", "BG@R1", "CL@R1", "ms / sequence"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for title, m in rows:
        table.add_row(title, f"{m['params']:,}", *(f"{m[k]:.2f}" for k in ("NM@R1", "BG@R1", "CL@R1")),
                      f"{m['infer_ms_per_seq']:.1f}")
    console.print(table)
    summary = {"wall_seconds": wall, "runs": {title: m for title, m in rows}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
