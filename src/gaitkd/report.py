"""``gaitkd report RUN_DIR``: a study's multirun folder -> one markdown table (mean ± std over seeds) and plots.

Every job folder under ``RUN_DIR`` that holds ``metrics.json`` (written by :func:`gaitkd.run.train`) and Hydra's
``.hydra/overrides.yaml`` is one run. Runs are grouped into configurations by the overrides that vary between
jobs, ``seed`` excepted; each configuration becomes one row with the mean ± sample std of the evaluation metrics
over its seeds (the mean alone for a single seed); ``label_key`` names the rows by one override's value instead of
all varying ones (e.g. ``+variant=gaitkd`` set by a study driver). Written next to the jobs: ``report.md``,
``report.json``, ``report.png`` (bars with std error bars per metric), when the jobs hold ``per_view.json``
``report_per_view.png`` (rank-1 per probe view, mean over seeds, one panel per condition) and, when the study
sweeps one numeric key, ``report_<key>.png`` (metric against that value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from gaitkd.errors import ConfigError
from gaitkd.study import override_key

# Evaluation results in the order a table shows them (OpenGait's names without the prefix); others are ignored.
HEADLINE = ("NM@R1", "BG@R1", "CL@R1", "NM-Rank@1", "NM-mAP", "BG-Rank@1", "BG-mAP", "CL-Rank@1", "CL-mAP",
            "Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")
SEED_KEY = "seed"
PER_VIEW = "per_view"  # a job's per_view.json (written by gaitkd.publish), kept under this key of its metrics
Runs = list[tuple[dict[str, str], dict]]  # (overrides as key -> value, metrics.json) per finished job


@dataclass
class Row:
    """One configuration: its swept overrides, the seeds it ran with and each metric's values over the seeds."""

    label: str
    settings: dict[str, str]
    seeds: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    per_view: list[dict] = field(default_factory=list)  # each seed's {"views": [...], "rows": {condition: [...]}}
    by_seed: dict[str, dict[str, float]] = field(default_factory=dict)  # seed -> metric -> value

    def mean_std(self, metric: str) -> tuple[float, float]:
        v = np.asarray(self.values.get(metric, []), dtype=np.float64)
        if not len(v):
            return float("nan"), float("nan")
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")  # one seed: no spread


def find_runs(run_dir: Path) -> Runs:
    """``(overrides as key -> value, metrics)`` of every finished job under ``run_dir``, in job order."""
    runs = []
    for metrics_file in sorted(run_dir.rglob("metrics.json"), key=_job_order):
        overrides_file = metrics_file.parent / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) or []
        settings = {override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in overrides}
        metrics = json.loads(metrics_file.read_text())
        if (metrics_file.parent / f"{PER_VIEW}.json").is_file():
            metrics[PER_VIEW] = json.loads((metrics_file.parent / f"{PER_VIEW}.json").read_text())
        runs.append((settings, metrics))
    return runs


def _job_order(path: Path) -> tuple:
    parts = path.relative_to(path.anchor).parts[:-1]
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def build_rows(runs: Runs, metrics: list[str] | None = None,
               label_key: str | None = None) -> tuple[list[Row], list[str]]:
    """Group runs into configuration rows; returns the rows and the metric columns (present ones, table order)."""
    keys = sorted({k for settings, _ in runs for k in settings})
    varying = [k for k in keys if k != SEED_KEY and len({s.get(k) for s, _ in runs}) > 1]
    if metrics is None:
        present = {k for _, m in runs for k, v in m.items() if isinstance(v, (int, float))}
        metrics = [m for m in HEADLINE if m in present]
    rows: dict[tuple, Row] = {}
    for settings, values in runs:
        key = tuple(settings.get(k, "") for k in varying)
        label = ", ".join(f"{k}={settings.get(k, '-')}" for k in varying) or "all runs"
        if label_key is not None:
            label = settings.get(label_key, label)
        row = rows.setdefault(key, Row(label, {k: settings.get(k, "") for k in varying}))
        row.seeds.append(settings.get(SEED_KEY, str(values.get(SEED_KEY, "?"))))
        seed_values = row.by_seed.setdefault(row.seeds[-1], {})
        for m in metrics:
            if isinstance(values.get(m), (int, float)):
                row.values.setdefault(m, []).append(float(values[m]))
                seed_values[m] = float(values[m])
        if PER_VIEW in values:
            row.per_view.append(values[PER_VIEW])
    return list(rows.values()), metrics


def plot_per_view(rows: list[Row], path: Path, title: str) -> bool:
    """Rank-1 per probe view (mean over seeds), one panel per condition, one curve per row; False if no data."""
    rows = [r for r in rows if r.per_view]
    if not rows:
        return False
    views = rows[0].per_view[0]["views"]
    conditions = list(rows[0].per_view[0]["rows"])
    fig = Figure(figsize=(4.2 * len(conditions), 4.0))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(conditions), i + 1) for i in range(len(conditions))]
    for row in rows:
        for ax, cond in zip(axes, conditions):
            curve = np.mean([pv["rows"][cond] for pv in row.per_view], axis=0)
            ax.plot(range(len(views)), curve, marker="o", markersize=3, label=row.label)
    for ax, cond in zip(axes, conditions):
        ax.set_xticks(range(len(views)), views, rotation=90, fontsize=7)
        ax.set_title(f"{cond}: rank-1 per probe view")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def markdown_table(rows: list[Row], metrics: list[str]) -> str:
    header = ["configuration", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for m in metrics:
            mean, std = row.mean_std(m)
            cells.append("—" if np.isnan(mean) else f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}")
        lines.append(f"| {row.label} | {len(row.seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_differences(rows: list[Row], metrics: list[str], baseline: str) -> list[dict]:
    """Per row (the baseline excepted): each metric's differences to the baseline row on the same seeds.

    Every variant of a seed sees the same data and initial weights, so the per-seed difference is the comparison
    with the seed-to-seed spread taken out. Returns ``{"label", "seeds", metric: {"mean", "std", "wins"}}`` rows
    (``wins``: seeds where the row is above the baseline)."""
    base = next((r for r in rows if r.label == baseline), None)
    if base is None:
        raise ConfigError(f"gaitkd report --baseline {baseline}: no row of that name; rows: "
                          f"{', '.join(r.label for r in rows)}")
    out = []
    for row in rows:
        if row is base:
            continue
        seeds = [s for s in row.seeds if s in base.by_seed]
        entry: dict = {"label": row.label, "seeds": seeds}
        for m in metrics:
            d = np.asarray([row.by_seed[s][m] - base.by_seed[s][m] for s in seeds
                            if m in row.by_seed[s] and m in base.by_seed[s]], dtype=np.float64)
            entry[m] = {**_json_stats(float(d.mean()) if len(d) else float("nan"),
                                      float(d.std(ddof=1)) if len(d) > 1 else float("nan")),
                        "wins": int((d > 0).sum()), "n": len(d)}
        out.append(entry)
    return out


def paired_table(paired: list[dict], metrics: list[str], baseline: str) -> str:
    header = ["configuration", "paired seeds", *(f"Δ{m}" for m in metrics)]
    lines = [f"Difference to `{baseline}` on the same seed (mean ± std over seeds; in brackets: seeds above it)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in paired:
        cells = []
        for m in metrics:
            v = entry[m]
            if v["mean"] is None:
                cells.append("—")
                continue
            spread = "" if v["std"] is None else f" ± {v['std']:.2f}"
            cells.append(f"{v['mean']:+.2f}{spread} ({v['wins']}/{v['n']})")
        lines.append(f"| {entry['label']} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure(size: tuple[float, float]):
    """A figure on the Agg canvas (no GUI backend, no pyplot state) and its one axis."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_bars(rows: list[Row], metrics: list[str], path: Path, title: str) -> None:
    """Grouped bars: one group per metric, one bar per configuration, std over seeds as error bars."""
    width = 0.8 / max(len(rows), 1)
    fig, ax = _figure((max(6.0, 1.6 * len(metrics) + 0.4 * len(rows)), 4.2))
    x = np.arange(len(metrics))
    for i, row in enumerate(rows):
        stats = [row.mean_std(m) for m in metrics]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [s[0] for s in stats], width,
               yerr=np.nan_to_num([s[1] for s in stats]),
               capsize=3, label=f"{row.label} (n={len(row.seeds)})")
    ax.set_xticks(x, metrics)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(3, len(rows)), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_numeric(rows: list[Row], metrics: list[str], key: str, path: Path, title: str) -> None:
    """Each metric against the numeric value of the one swept key (mean ± std over seeds)."""
    order = sorted(rows, key=lambda r: float(r.settings[key]))
    xs = [float(r.settings[key]) for r in order]
    fig, ax = _figure((6.0, 4.2))
    for m in metrics:
        stats = [r.mean_std(m) for r in order]
        ax.errorbar(xs, [s[0] for s in stats], yerr=np.nan_to_num([s[1] for s in stats]), marker="o", capsize=3,
                    label=m)
    ax.set_xlabel(key)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _numeric(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return len(set(values)) >= 2


def _json_stats(mean: float, std: float) -> dict[str, float | None]:
    """NaN (no value / a single seed) as JSON null."""
    return {"mean": None if np.isnan(mean) else mean, "std": None if np.isnan(std) else std}


def report(run_dir: str | Path, metrics: list[str] | None = None, out_dir: str | Path | None = None,
           label_key: str | None = None, baseline: str | None = None) -> dict:
    """Write ``report.md`` / ``report.json`` / PNGs for the multirun under ``run_dir``; returns the JSON payload.

    ``baseline``: a row label; adds the table of per-seed differences to it (:func:`paired_differences`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"gaitkd report: {run_dir} is not a folder (give a study's multirun folder)")
    runs = find_runs(run_dir)
    if not runs:
        raise ConfigError(f"gaitkd report: no finished job under {run_dir} (each job folder needs metrics.json "
                          "and .hydra/overrides.yaml, as `python -m gaitkd.run -m ...` writes them)")
    rows, metrics = build_rows(runs, metrics, label_key)
    if not metrics:
        raise ConfigError(f"gaitkd report: the runs under {run_dir} hold no evaluation metric (were they run with "
                          "test=false?)")
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    title = f"{run_dir.parent.name}/{run_dir.name}: mean ± std over seeds"
    table = markdown_table(rows, metrics)
    paired = paired_differences(rows, metrics, baseline) if baseline is not None else None
    if paired is not None:
        table += "\n" + paired_table(paired, metrics, baseline)
    (out / "report.md").write_text(f"# {run_dir}\n\n{len(runs)} runs, {len(rows)} configurations\n\n{table}")
    plots = [out / "report.png"]
    plot_bars(rows, metrics, plots[0], title)
    if plot_per_view(rows, out / "report_per_view.png", title):
        plots.append(out / "report_per_view.png")
    swept = sorted({k for r in rows for k in r.settings})
    if len(swept) == 1 and _numeric([r.settings[swept[0]] for r in rows]):
        plots.append(out / f"report_{swept[0].replace('/', '_')}.png")
        plot_numeric(rows, metrics, swept[0], plots[-1], title)
    payload = {
        "run_dir": str(run_dir), "runs": len(runs), "metrics": metrics, "table": table,
        "plots": [str(p) for p in plots],
        "rows": [{"label": r.label, "settings": r.settings, "seeds": r.seeds,
                  **{m: _json_stats(*r.mean_std(m)) for m in metrics}} for r in rows],
    }
    if paired is not None:
        payload["paired"] = {"baseline": baseline, "rows": paired}
    (out / "report.json").write_text(json.dumps(payload, indent=2))
    return payload
