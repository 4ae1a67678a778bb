"""bench/results_md.py renders every section of a results file (made-up numbers; nothing is timed here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import figure, machine, stats  # noqa: E402  (bench/ is not a package)
from results_md import render  # noqa: E402


def results() -> dict:
    step = {"batch": 8, "frames": 10}
    loader = [figure("loader", f"cache {c}", [1e-4, 2e-4], unit="s/seq", bound=[1e-2], cache=c == "on", workers=w,
                     batches_per_s=stats([50.0, 60.0]), speedup_vs_emulated=3.0)
              for c, w in (("off", 0), ("off", 2), ("on", 0), ("on", 2))]
    switch = dict(step, overrides=["perf.teacher_autocast=bf16"], warmup_s=1.0, max_abs_diff={"loss": 1e-4},
                  max_rel_diff={"loss": 1e-3}, exact=False)
    return {
        "command": "python bench/suite.py", "timestamp": "2026-01-01T00:00:00+00:00", "machine": machine(),
        "defaults": {"perf": {"teacher_autocast": None}, "data": {"num_workers": 2, "cache": False,
                                                                  "pin_memory": False}},
        "sections": {
            "eval": {"seconds": 1.0, "figures": [figure("eval", "casia_b_16 single-view", [0.3, 0.2, 0.4],
                                                        bound=[0.2], target=1.5, sequences=5500, probes=3300,
                                                        gallery=2200, peak_rss_gb=0.6)]},
            "loader": {"seconds": 1.0, "figures": loader},
            "framework": {"seconds": 1.0, "figures": [figure("framework", "gaitset", [1.02], bound=[1.0],
                                                             target=1.05, **step)]},
            "kd_step": {"seconds": 1.0, "figures": [figure("kd_step", "two_teachers", [1.1], bound=[1.0], target=1.05,
                                                           student_step=stats([0.6]), teacher_forward=stats([0.4]),
                                                           **step)]},
            "switches": {"seconds": 1.0, "figures": [figure("switches", "defaults", [1.0], bound=[1.0], **switch),
                                                     figure("switches", "teacher_autocast_bf16", [0.8], bound=[1.0],
                                                            **switch)]},
            "export": {"seconds": 1.0, "figures": [figure("export", "GaitSet", [60.0], unit="ms/seq", bound=[61.0],
                                                          target=1.0, tolerance=0.05, params=10, plain_params=10,
                                                          gflops=6.5, frames=30)]},
            "demo": {"skipped": "not in this run", "seconds": 0.0},
        },
    }


def test_every_section_and_the_switches_table_render():
    text = render(results())
    for title in ("Evaluation at dataset scale", "Training loader", "Framework overhead", "KD step",
                  "Exported student", "Speed switches", "Switches tried", "Skipped: not in this run"):
        assert title in text, title
    assert "1.020 ✓" in text and "1.100 ✗" in text  # ratio against the issue's target
    assert "0.984 ✓" in text and "1.00 (+0.05 noise)" in text  # export: the same latency, within noise
    assert "| `perf.teacher_autocast` | `bf16` | 0.800 |" in text and "faster" in text and "(defaults)" in text
    assert "`data.pin_memory`" in text and "`data.cache`" in text and "| `null` |" in text
    assert "0.3 (0.2–0.4) s" in text  # median (min–max)
