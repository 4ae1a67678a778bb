"""``bench/RESULTS.md`` from ``bench/results.json``: one table per section and the "switches tried" table.

    .venv/bin/python bench/results_md.py [bench/results.json] [bench/RESULTS.md]     # re-render without measuring

Every number is read from the JSON written by ``bench/suite.py``; nothing is measured here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TITLES = {
    "eval": ("Evaluation at dataset scale", "protocol wall time / bare per-part products (same process, same run)"),
    "loader": ("Training loader", "loader time per sequence / full-width GaitSet training step per sequence"),
    "framework": ("Framework overhead", "step through `Trainer.fit` / the same step as a plain PyTorch loop"),
    "kd_step": ("KD step", "KD step / (student step + teacher forward(s))"),
    "export": ("Exported student", "TorchScript export latency / plain model latency (batch 1)"),
    "switches": ("Speed switches", "KD step with the switch / KD step with the `perf` defaults"),
    "demo": ("`make demo`", "wall time of one run (not a median)"),
}
NOISE = 0.05  # a ratio within 1 +- NOISE is read as "no difference" (timings drift between runs, see the notes)


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if unit == "s" and x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _spread(st: dict | None, unit: str) -> str:
    """``median (min–max) unit``; a single run is shown alone."""
    if not st:
        return "—"
    if st["n"] == 1:
        return f"{_num(st['median'], unit)} {unit} (1 run)"
    return f"{_num(st['median'], unit)} ({_num(st['min'], unit)}–{_num(st['max'], unit)}) {unit}"


def _ratio(fig: dict) -> str:
    """The ratio, ✓ / ✗ against the target (plus its ``tolerance`` where the target is "the same": 1.00)."""
    if fig["ratio"] is None:
        return "—"
    limit = None if fig["target"] is None else fig["target"] + fig["extra"].get("tolerance", 0.0)
    mark = "" if limit is None else (" ✓" if fig["ratio"] <= limit + 1e-9 else " ✗")
    return f"{fig['ratio']:.3f}{mark}"


def _target(fig: dict) -> str:
    if fig["target"] is None:
        return "—"
    tolerance = fig["extra"].get("tolerance")
    return f"{fig['target']:.2f} (+{tolerance:.2f} noise)" if tolerance else f"≤ {fig['target']:.2f}"


def _details(fig: dict) -> str:
    ex, section = fig["extra"], fig["section"]
    if section == "eval":
        return f"{ex['sequences']:,} seqs, {ex['probes']:,} × {ex['gallery']:,}; peak RSS {ex['peak_rss_gb']:.2f} GB"
    if section == "loader":
        return (f"{_spread(ex['batches_per_s'], 'batches/s')}; {ex['speedup_vs_emulated']:.2f}× the OpenGait-style "
                f"emulation")
    if section in ("framework", "kd_step", "switches"):
        what = f"{ex['batch']} seqs × {ex['frames']} frames"
        if section == "kd_step":
            what += (f"; student step {_spread(ex['student_step'], 's')}, teacher forward "
                     f"{_spread(ex['teacher_forward'], 's')}")
        return what
    if section == "export":
        return (f"params {ex['params']:,} (plain {ex['plain_params']:,}), {ex['gflops']:.2f} GFLOPs, "
                f"{ex['frames']} frames")
    if section == "demo":
        return ex.get("note", "")
    return ""


def section_table(section: str, figures: list[dict]) -> list[str]:
    title, what = TITLES.get(section, (section, ""))
    lines = [f"## {title}", "", f"Ratio: {what}. Target ✓ / ✗ where the issue sets one.", "",
             "| figure | value | bound | ratio | target | details |", "|---|---:|---:|---:|---:|---|"]
    for fig in figures:
        bound = _spread(fig["bound"], fig["unit"]) if fig["bound"] else "—"
        lines.append(f"| {fig['name']} | {_spread(fig['value'], fig['unit'])} | {bound} | {_ratio(fig)} | "
                     f"{_target(fig)} | {_details(fig)} |")
    return [*lines, ""]


def verdict(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if ratio <= 1 - NOISE:
        return "faster"
    if ratio >= 1 + NOISE:
        return "slower"
    return f"no difference (±{NOISE:.0%})"


def switches_table(results: dict) -> list[str]:
    """Every switch tried: the ``perf`` variants of the KD step and the loader's workers / cache / pinning."""
    perf, data = results["defaults"]["perf"], results["defaults"]["data"]
    lines = ["## Switches tried", "",
             "Each against the default in the same run. *Default*: the value a run uses unless told otherwise "
             "(`perf` in `conf/run.yaml`; the loader keys of the default `data=casia_b`; the demo and `data=synthetic` "
             "use 0 workers and the cache).",
             "", "KD-step switches: the KD step of `conf/experiment/gaitgl_to_gaitset` (the `switches` figures: all "
             "variants built from the same weights, stepped in turn); *warm-up*: first forward + loss + first step "
             "(where `torch.compile` compiles, with an empty cache); *diff*: student embeddings, teacher outputs and "
             "loss vs the defaults on the same batch. Loader switches: from the `loader` section.",
             "", "| switch | setting | time ratio vs default | step (or loader) time | warm-up | max abs (rel) diff | "
             "verdict | default |", "|---|---|---:|---:|---:|---|---|---|"]
    for fig in results["sections"].get("switches", {}).get("figures", []):
        ex = fig["extra"]
        if fig["name"] == "defaults":
            lines.append(f"| (defaults) | — | 1 | {_spread(fig['value'], 's')} | {ex['warmup_s']:.1f} s | — | "
                         f"reference | — |")
            continue
        key = ex["overrides"][0].split("=")[0] if ex["overrides"] else fig["name"]
        diff, rel = max(ex["max_abs_diff"].values()), max(ex["max_rel_diff"].values())
        exact = "exact (0)" if ex["exact"] else f"{diff:.1e} ({rel:.1e})"
        default = json.dumps(perf.get(key.removeprefix("perf.")))
        setting = f"`{ex['overrides'][0].split('=')[1]}`" if ex["overrides"] else ""
        if " " in fig["name"]:  # a per-model figure, e.g. "channels_last gaitpart": that student's own step
            setting += f" ({fig['name'].split(' ', 1)[1]} student step, {ex['batch']} seqs x {ex['frames']} frames)"
        lines.append(f"| `{key}` | {setting} | "
                     f"{fig['ratio']:.3f} | {_spread(fig['value'], 's')} | {ex['warmup_s']:.1f} s | {exact} | "
                     f"{verdict(fig['ratio'])} | `{default}` |")
    loader = {(f["extra"]["cache"], f["extra"]["workers"]): f for f in
              results["sections"].get("loader", {}).get("figures", [])}
    for key, setting, a, b in (("num_workers", "2 vs 0 (cache off)", (False, 2), (False, 0)),
                               ("num_workers", "2 vs 0 (cache on)", (True, 2), (True, 0)),
                               ("cache", "on vs off (0 workers)", (True, 0), (False, 0)),
                               ("cache", "on vs off (2 workers)", (True, 2), (False, 2))):
        if a in loader and b in loader:
            ratio = loader[b]["extra"]["batches_per_s"]["median"] / loader[a]["extra"]["batches_per_s"]["median"]
            time_a = _spread(loader[a]["value"], "s/seq")
            lines.append(f"| `data.{key}` | {setting} | {ratio:.3f} | {time_a} | — | exact (same batches) | "
                         f"{verdict(ratio)} | `{json.dumps(data.get(key))}` |")
    lines.append("| `data.pin_memory` | true vs false | not measured | — | — | exact | not applicable: pinned memory "
                 f"only speeds host → GPU copies; this machine has no GPU | `{json.dumps(data.get('pin_memory'))}` |")
    return [*lines, ""]


def render(results: dict) -> str:
    m = results["machine"]
    lines = ["# Benchmark results", "",
             f"Generated by `bench/results_md.py` from `results.json` ({results['timestamp']}). Command: "
             f"`{results['command']}`.", "",
             f"Machine: {m['cores']} cores ({m.get('cpu') or 'CPU model unknown'}), torch {m['torch']}, "
             f"{m['threads']} threads, Python {m['python']}, {m['platform']}.", "",
             "Each figure is the median (min–max) of the timed repeats after warm-up, with its bound measured in the "
             "same run; the ratio is of the medians. Nothing here is asserted on.", ""]
    for section, block in results["sections"].items():
        if block.get("skipped") or block.get("failed"):
            why = f"Skipped: {block['skipped']}." if block.get("skipped") else (
                f"Failed: `{block['failed'].strip().splitlines()[-1]}` (traceback in results.json).")
            lines += [f"## {TITLES.get(section, (section,))[0]}", "", why, ""]
            continue
        if section != "switches":  # its figures are the "Switches tried" table below
            lines += section_table(section, block["figures"])
        else:
            lines += [f"## {TITLES[section][0]}", "", "See [Switches tried](#switches-tried).", ""]
        when = "" if block.get("timestamp", results["timestamp"]) == results["timestamp"] else (
            f" (kept from the run of {block['timestamp']})")
        lines.append(f"Section wall time {block['seconds']:.0f} s{when}.")
        lines.append("")
    return "\n".join(lines + switches_table(results))


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_name("RESULTS.md")
    dst.write_text(render(json.loads(src.read_text())))


if __name__ == "__main__":
    main()
