"""bench/loader.py runs end to end at tiny sizes and writes every field (speed itself is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_loader_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "loader.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "loader.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    rows = result["rows"]
    conditions = {(cache, workers) for cache in (False, True) for workers in (0, 2)}
    for pipeline in ("opengait_emulated", "gaitkd"):
        mine = [r for r in rows if r["pipeline"] == pipeline]
        assert {(r["cache"], r["workers"]) for r in mine} == conditions
        assert all(r["batches_per_s"] > 0 and len(r["runs"]) == result["meta"]["repeats"] for r in mine)
    for row in (r for r in rows if r["pipeline"] == "gaitkd"):
        for key in ("speedup_vs_emulated", "loader_ms_per_seq", "loader_over_step"):
            assert row[key] > 0, key
    step = result["step"]
    assert step["model"] == "GaitSet" and step["step_s"] > 0 and step["step_ms_per_seq"] > 0
    assert result["meta"]["quick"] and result["meta"]["batch"] == [8, 8, 30]
