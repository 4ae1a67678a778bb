"""Human-readable views of an ``evaluate`` result: a rich per-view table, a probe×gallery heat-map PNG and a
CMC curve PNG.

Single-view results give one row per condition (NM/BG/CL) with the identical-view-excluded accuracy of
each probe view and the mean; cross-view results give a Rank@1 row and an mAP row per condition.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.2f}"


def per_view_rows(result: dict) -> list[tuple[str, np.ndarray, float]]:
    """(row label, per-view values [V] in percent, mean) for a single-view or cross-view result."""
    types = result.get("type_order")
    if types is None or "view_list" not in result:
        raise ValueError("result has no 'view_list' / 'type_order': pass the dict returned by evaluate()")
    if "per_view" in result:
        return [(t, np.asarray(result["per_view"][i]), result[f"{t}@R1"]) for i, t in enumerate(types)]
    if "acc_per_view" in result:
        rows = []
        for i, t in enumerate(types):
            rows.append((f"{t} Rank@1", np.asarray(result["acc_per_view"][i]), result[f"{t}-Rank@1"]))
            rows.append((f"{t} mAP", np.asarray(result["map_per_view"][i]), result[f"{t}-mAP"]))
        return rows
    raise ValueError("result has neither 'per_view' (single-view) nor 'acc_per_view' (cross-view) arrays")


def per_view_table(result: dict, title: str) -> Table:
    """Rich table: rows = conditions, columns = probe views + mean (percent, identical view excluded)."""
    table = Table(title=title, title_justify="left")
    table.add_column("probe", style="bold")
    for view in result.get("view_list", []):
        table.add_column(str(view), justify="right")
    table.add_column("mean", justify="right", style="bold cyan")
    for label, values, mean in per_view_rows(result):
        table.add_row(label, *(_fmt(float(v)) for v in values), _fmt(float(mean)))
    return table


def print_result(result: dict, title: str, console: Console | None = None) -> None:
    """Print ``per_view_table(result, title)`` to ``console`` (a new stdout console by default)."""
    # wide enough for 14 OU-MVLP views even when stdout is not a terminal (logs, CI)
    (console or Console(width=max(Console().width, 140))).print(per_view_table(result, title))


def _figure(width: float, height: float):
    """A Figure on an Agg canvas: no pyplot global state, works headless and in worker threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def plot_per_view_heatmap(result: dict, path: str | Path) -> Path:
    """Write a PNG with one probe-view × gallery-view accuracy heat-map per condition (single-view results).

    Returns:
        The written path.
    """
    if "acc" not in result:
        raise ValueError("plot_per_view_heatmap needs a single-view result (key 'acc' [T, V, V])")
    acc, views, types = np.asarray(result["acc"]), list(result["view_list"]), list(result["type_order"])
    fig = _figure(4.2 * len(types) + 0.8, 4.2)
    axes = fig.subplots(1, len(types), squeeze=False)[0]
    for ax, t, cells in zip(axes, types, acc):
        image = ax.imshow(cells, vmin=0.0, vmax=100.0, cmap="viridis")
        ax.set_xticks(range(len(views)), views, rotation=90, fontsize=7)
        ax.set_yticks(range(len(views)), views, fontsize=7)
        ax.set_xlabel("gallery view")
        ax.set_ylabel("probe view")
        ax.set_title(f"{t}: {_fmt(float(result[f'{t}@R1']))}% (excl. identical)", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8, label="rank-1 accuracy (%)")
    return _save(fig, path)


def cmc_curves(result: dict) -> dict[str, np.ndarray]:
    """Condition -> CMC ``[K]`` in percent (rank 1..K) of an ``evaluate`` result with ``cmc``.

    CASIA-B / OU-MVLP give ``cmc [T, K]`` in percent, one row per ``type_order`` condition; Gait3D gives
    ``cmc [K]`` as fractions over all probes (OpenGait's), returned here as one curve ``"all"``.
    """
    if "cmc" not in result:
        raise ValueError("result has no 'cmc': evaluate(..., cmc_ranks=K) with K > 0 adds it (Gait3D always does)")
    cmc = np.asarray(result["cmc"], dtype=np.float64)
    if cmc.ndim == 1:
        return {"all": 100.0 * cmc}
    return {str(t): row for t, row in zip(result["type_order"], cmc)}


def plot_cmc(result: dict, path: str | Path, max_rank: int | None = None) -> Path:
    """Write a PNG with one CMC curve per condition: rank-k accuracy (%) for k = 1..K (``max_rank`` cuts K).

    Returns:
        The written path.
    """
    curves = {t: c[:max_rank] for t, c in cmc_curves(result).items()}
    fig = _figure(5.6, 4.2)
    ax = fig.subplots()
    for t, curve in curves.items():
        ranks = np.arange(1, len(curve) + 1)
        ax.plot(ranks, curve, marker="o", markersize=3, label=f"{t} (rank-1 {_fmt(float(curve[0]))}%)")
    lowest = min((float(np.nanmin(c)) for c in curves.values() if np.isfinite(c).any()), default=0.0)
    ax.set_ylim(max(0.0, 10.0 * math.floor(lowest / 10.0) - 5.0), 101.0)
    last = max(len(c) for c in curves.values())
    step = 1 if last <= 10 else 5 if last <= 50 else 10
    ax.set_xticks(sorted({1, *range(step, last + 1, step)}))  # rank 1 always labelled
    ax.set_xlim(0.5, last + 0.5)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification accuracy (%)")
    protocol = "identical view excluded" if "acc" in result else "cross-view gallery" if "acc_raw" in result else ""
    ax.set_title(f"CMC ({protocol})" if protocol else "CMC", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
