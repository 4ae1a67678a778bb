"""`make bench`: the whole pipeline's benchmark suite, each figure read as a ratio to its bound from the same run.

    .venv/bin/python bench/suite.py             # full run (< 20 min, 2 cores): bench/results.json + bench/RESULTS.md
    .venv/bin/python bench/suite.py --smoke     # seconds-sized: checks that the suite runs (CI); into a temp folder
    .venv/bin/python bench/suite.py --sections kd_step export --out /tmp/bench

Sections (``--sections``, in this order) and the scripts whose functions they call:

- ``eval``      evaluation at CASIA-B / OU-MVLP test sizes vs the bare per-part products, peak RSS (``eval_scale.py``)
- ``loader``    training-loader batches/s, cache on/off, 0/2 workers; loader / GaitSet step (``loader.py``)
- ``framework`` a step through ``Trainer.fit`` vs a plain PyTorch loop, per model (``framework.py``)
- ``kd_step``   KD step / (student step + teacher forwards), per KD experiment of ``conf/experiment`` (``kd_step.py``)
- ``switches``  ``perf.*`` speed switches vs the defaults: time, warm-up, exactness (``switches.py``)
- ``export``    exported student latency / plain latency, params, FLOPs (``export_latency.py``)
- ``demo``      ``make demo`` wall time (one run: it takes ~6 minutes)

Nothing asserts on time. Re-running some sections into an existing results file replaces only those sections.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

import eval_scale
import export_latency
import framework
import kd_step
import loader
import results_md
import switches
from common import compose_run, figure, machine, stats

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECTIONS = ("eval", "loader", "framework", "kd_step", "switches", "export", "demo")
SMALL = ["student=gaitset_small", "teacher=gaitgl_narrow"]  # smoke: the KD experiments with the demo's models
# Sizes per section. Full: what fits 20 minutes here (OU-MVLP single-view once ~4.5 min, the demo ~6 min).
PLANS = {
    "full": {
        "eval": {"cases": ["casia_b_16", "casia_b_62", "oumvlp_single"], "quick": False},
        "loader": {"argv": []},
        "framework": {"models": framework.MODELS, "sizes": framework.SIZES, "warmup": 2, "repeats": 10},
        "kd_step": {"experiments": kd_step.EXPERIMENTS, "p": 4, "k": 2, "frames": 10, "repeats": 5, "overrides": []},
        "switches": {"p": 4, "k": 2, "frames": 10, "repeats": 5, "variants": tuple(switches.VARIANTS),
                     "overrides": [], "per_model": framework.MODELS, "sizes": framework.SIZES},
        "export": {"frames": 30, "repeats": 5, "models": None},
        "demo": {"run": True},
    },
    "smoke": {
        "eval": {"cases": ["casia_b_16", "oumvlp_16"], "quick": True},
        "loader": {"argv": ["--quick", "--step-student", "gaitset_small"]},
        "framework": {"models": ["gaitset_small"], "sizes": {"gaitset_small": (2, 2, 6)}, "warmup": 1, "repeats": 2},
        "kd_step": {"experiments": kd_step.EXPERIMENTS, "p": 2, "k": 2, "frames": 6, "repeats": 1, "overrides": SMALL},
        "switches": {"p": 2, "k": 2, "frames": 6, "repeats": 1, "overrides": SMALL,
                     "variants": ("defaults", "channels_last", "compile_teacher", "teacher_autocast_bf16",
                                   "teacher_no_grad"),
                     "per_model": ["gaitset_small"], "sizes": {"gaitset_small": (2, 2, 6)}},
        "export": {"frames": 8, "repeats": 3, "models": ["GaitPart"]},
        "demo": {"run": False},
    },
}
# full-plan section times estimated from the CPU budget notes and earlier runs on a quiet 2-core machine (~17 min)
EXPECTED_S = {"eval": 300, "loader": 60, "framework": 110, "kd_step": 30, "switches": 200, "export": 30, "demo": 360}
EVAL_TARGETS = {"casia_b": 1.5, "oumvlp": 1.2}  # issue 4's single-view targets (bench/README.md)


def run_eval(plan: dict, log) -> list[dict]:
    figures = []
    for row in eval_scale.run_cases(plan["cases"], plan["quick"], log=log):
        common = {k: row[k] for k in ("protocol", "sequences", "channels", "parts", "probes", "gallery",
                                      "peak_rss_gb", "bare_gflop_per_s")}
        figures.append(figure("eval", f"{row['case']} single-view", row["single_view_runs"],
                              bound=row["bare_products_runs"], bound_name="bare per-part products",
                              target=EVAL_TARGETS[row["protocol"]], **common))
        if "cross_view_runs" in row:
            figures.append(figure("eval", f"{row['case']} cross-view", row["cross_view_runs"],
                                  bound=row["cross_view_bare_runs"], bound_name="bare per-part products", **common))
    return figures


def run_loader(plan: dict, log) -> list[dict]:
    args = loader.parser().parse_args(plan["argv"])
    result = loader.run(args, log=log)
    step, per_batch = result["step"], loader.P * loader.K
    step_per_seq = stats([s / step["batch"] for s in step["step_runs"]])
    figures = []
    for row in (r for r in result["rows"] if r["pipeline"] == "gaitkd"):
        emulated = next(r for r in result["rows"] if r["pipeline"] == "opengait_emulated"
                        and (r["cache"], r["workers"]) == (row["cache"], row["workers"]))
        figures.append(figure(
            "loader", f"cache {'on' if row['cache'] else 'off'}, {row['workers']} workers",
            [1 / (rate * per_batch) for rate in row["runs"]], unit="s/seq", bound=step_per_seq,
            bound_name=f"{step['model']} training step per sequence", cache=row["cache"], workers=row["workers"],
            batches_per_s=stats(row["runs"]), emulated_batches_per_s=stats(emulated["runs"]),
            speedup_vs_emulated=row["speedup_vs_emulated"], batch=result["meta"]["batch"],
            step_batch=step["batch"], step_frames=step["frames"]))
    return figures


def run_export(plan: dict, log) -> list[dict]:
    rows = export_latency.measure(export_latency.default_fixtures(), plan["frames"], plan["repeats"], plan["models"],
                                  log=log)
    return [figure("export", r["model"], r["latency_runs_ms"], unit="ms/seq", bound=r["plain_latency_runs_ms"],
                   bound_name="plain model (eager)", target=1.0, tolerance=0.05, params=r["params"],
                   plain_params=r["plain_params"], gflops=r["flops"] / 1e9, frames=r["frames"]) for r in rows]


def run_demo(plan: dict, log) -> list[dict]:
    if not plan["run"]:
        raise SkipSection("the demo takes ~6 minutes; the smoke run does not run it")
    cached = (Path(os.environ.get("GAITKD_CACHE", REPO / ".cache")) / "synthetic").is_dir()  # else generated too
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "gaitkd.demo", "--out", tmp]
        log(f"  $ {shlex.join(cmd)}  (output: {tmp}/demo.log)")
        start = time.perf_counter()
        with open(Path(tmp) / "demo.log", "w") as out:
            subprocess.run(cmd, check=True, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    log(f"  demo wall time {wall:.0f} s ({wall / 60:.1f} min)")
    note = ("one run (not a median): teacher, baseline and GaitKD runs with their tests; synthetic CASIA-B "
            + ("already in the cache" if cached else "generated in this run (clean clone)"))
    return [figure("demo", "make demo", [wall], note=note, inner_wall_s=summary["wall_seconds"],
                   synthetic_cached=cached)]


class SkipSection(Exception):
    """A section that does not run in this plan (the reason is recorded)."""


RUNNERS = {
    "eval": run_eval,
    "loader": run_loader,
    "framework": lambda plan, log: framework.run(plan["models"], plan["sizes"], plan["warmup"], plan["repeats"],
                                                 log=log),
    "kd_step": lambda plan, log: kd_step.run(plan["experiments"], (), plan["p"], plan["k"], plan["frames"],
                                             plan["repeats"], plan["overrides"], log=log),
    "switches": lambda plan, log: switches.run("gaitgl_to_gaitset", plan["p"], plan["k"], plan["frames"],
                                               plan["repeats"], plan["variants"], plan["overrides"], log=log)
    + switches.channels_last_per_model(plan["per_model"], plan["sizes"], plan["repeats"], log=log),
    "export": run_export,
    "demo": run_demo,
}


def defaults() -> dict:
    """What a run uses unless told otherwise: the ``perf`` switches and the loader keys of the default data."""
    cfg = compose_run([])
    return {"perf": OmegaConf.to_container(cfg.perf),
            "data": {k: cfg.data.get(k) for k in ("num_workers", "cache", "pin_memory", "persistent_workers")},
            "data_config": cfg.data.get("_target_")}


def summary_table(results: dict) -> Table:
    table = Table(title="benchmark figures (median; ratio to the bound measured in the same run)")
    for col in ("section", "figure", "value", "bound", "ratio", "target"):
        table.add_column(col, justify="left" if col in ("section", "figure") else "right")
    for section, block in results["sections"].items():
        for fig in block.get("figures", []):
            table.add_row(section, fig["name"], f"{fig['value']['median']:.4g} {fig['unit']}",
                          f"{fig['bound']['median']:.4g}" if fig["bound"] else "—",
                          f"{fig['ratio']:.3f}" if fig["ratio"] is not None else "—",
                          f"{fig['target']:.2f}" if fig["target"] is not None else "—")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (< 1 min): checks the suite, not speed")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json + RESULTS.md (default: bench/, or a temp folder with --smoke)")
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.gettempdir()) / "gaitkd-bench-smoke" if args.smoke else BENCH)
    out.mkdir(parents=True, exist_ok=True)
    plan = PLANS["smoke" if args.smoke else "full"]
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

    def log(line: str) -> None:
        console.print(line, markup=False)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() and not args.smoke else None
    results = {
        "command": shlex.join([Path(sys.executable).name, "bench/suite.py", *(argv if argv is not None else
                                                                                 sys.argv[1:])]),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke, "machine": machine(),
        "defaults": defaults(),
        "sections": {},
    }
    if previous and previous.get("machine") == results["machine"]:  # keep the sections not re-run now
        results["sections"] = {k: v for k, v in previous["sections"].items() if k not in args.sections}
    start = time.perf_counter()
    for section in SECTIONS:
        if section not in args.sections:
            continue
        expect = f" (expected ~{EXPECTED_S[section] / 60:.1f} min on a quiet machine)" if not args.smoke else ""
        console.rule(f"{section}: {results_md.TITLES[section][1]}{expect}", align="left")
        t0 = time.perf_counter()
        try:
            block = {"figures": RUNNERS[section](plan[section], log)}
        except SkipSection as reason:
            block = {"skipped": str(reason)}
        except Exception:  # the other sections still run; the run fails at the end
            block = {"failed": traceback.format_exc()}
            log(block["failed"])
        block.update(seconds=time.perf_counter() - t0, timestamp=results["timestamp"], command=results["command"],
                     plan=plan[section])
        results["sections"][section] = block
        log(f"   {section}: {block['seconds']:.0f} s (total {time.perf_counter() - start:.0f} s)")
        results_path.write_text(json.dumps(results, indent=2, default=str))  # a crash later keeps what was done
    results["seconds"] = time.perf_counter() - start
    order = {s: i for i, s in enumerate(SECTIONS)}
    results["sections"] = dict(sorted(results["sections"].items(), key=lambda kv: order[kv[0]]))
    results_path.write_text(json.dumps(results, indent=2, default=str))
    (out / "RESULTS.md").write_text(results_md.render(results))
    console.print(summary_table(results))
    console.print(f"{results['seconds']:.0f} s; wrote {results_path} and {out / 'RESULTS.md'} "
                  f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    failed = [name for name, block in results["sections"].items() if "failed" in block]
    if failed:
        sys.exit(f"bench: section(s) failed: {', '.join(failed)} (tracebacks above and in {results_path})")


if __name__ == "__main__":
    main()
