"""Publishing a test result: the files in the run's output folder and what each logger shows of them.

Whatever the loggers, the output folder gets ``test_metrics.json`` (the headline floats), ``per_view.json`` (rank-1 per
probe view and condition, CASIA-B / OU-MVLP), ``per_view_heatmap.png``
(single-view protocols, with ``evaluation.heatmap``) and ``cmc.png`` (with ``evaluation.cmc_ranks`` > 0). W&B gets
both images and the per-view × per-condition accuracy table (a ``wandb.Table``); TensorBoard the images and the
table as text. CSV shows nothing more: its metrics, as every logger's, come from ``LightningModule.log``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

from gaitkd.evaluation.report import per_view_rows, plot_cmc, plot_per_view_heatmap

HEATMAP, CMC, TABLE = "per_view_heatmap", "cmc", "per_view"  # file stems, and logger keys under "test/"


def write_result_files(
    result: dict, out_dir: Path, extra: dict[str, Any] | None = None, heatmap: bool = True, cmc_ranks: int = 0
) -> dict[str, Path]:
    """Write ``test_metrics.json`` and the plots a result allows into ``out_dir``; returns ``{image key: path}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    headline = {k: v for k, v in result.items() if isinstance(v, float)}
    (out_dir / "test_metrics.json").write_text(json.dumps({**headline, **(extra or {})}, indent=2))
    if "view_list" in result and ("per_view" in result or "acc_per_view" in result):  # numbers behind the heat-map
        rows = {label: [float(v) for v in values] for label, values, _ in per_view_rows(result)}
        (out_dir / f"{TABLE}.json").write_text(json.dumps({"views": list(result["view_list"]), "rows": rows}))
    images = {}
    if heatmap and "acc" in result:
        images[HEATMAP] = plot_per_view_heatmap(result, out_dir / f"{HEATMAP}.png")
    if cmc_ranks > 0 and "cmc" in result:
        images[CMC] = plot_cmc(result, out_dir / f"{CMC}.png", max_rank=cmc_ranks)
    return images


def accuracy_table(result: dict) -> tuple[list[str], list[list[Any]]] | None:
    """``(columns, rows)`` of the per-view accuracy table (``condition``, one column per probe view, ``mean``;
    NaN as ``None``), or ``None`` for a result without per-view rows (Gait3D)."""
    if "view_list" not in result:
        return None
    columns = ["condition", *map(str, result["view_list"]), "mean"]
    rows = [[label, *map(float, values), float(mean)] for label, values, mean in per_view_rows(result)]
    return columns, [[None if isinstance(x, float) and math.isnan(x) else x for x in row] for row in rows]


def _to_wandb(logger: WandbLogger, images: dict[str, Path], table: tuple | None, step: int) -> None:
    import wandb

    media: dict[str, Any] = {f"test/{key}": wandb.Image(str(path)) for key, path in images.items()}
    if table is not None:
        media[f"test/{TABLE}"] = wandb.Table(columns=table[0], data=table[1])
    if media:
        logger.log_metrics(media, step=step)


def _cell(x: Any) -> str:
    return "nan" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def _markdown(columns: list[str], rows: list[list[Any]]) -> str:
    lines = [columns, ["---"] * len(columns), *([_cell(x) for x in row] for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _to_tensorboard(logger: TensorBoardLogger, images: dict[str, Path], table: tuple | None, step: int) -> None:
    from matplotlib.image import imread

    writer = logger.experiment
    for key, path in images.items():
        rgb = np.round(imread(path)[..., :3] * 255).astype(np.uint8)  # PNG -> [H, W, 3] uint8
        writer.add_image(f"test/{key}", rgb, step, dataformats="HWC")
    if table is not None:
        writer.add_text(f"test/{TABLE}", _markdown(*table), step)
    writer.flush()


def publish(
    result: dict,
    out_dir: str | Path | None,
    loggers: Sequence[Logger],
    step: int = 0,
    extra: dict[str, Any] | None = None,
    heatmap: bool = True,
    cmc_ranks: int = 0,
) -> dict[str, Path]:
    """Write the result files into ``out_dir`` and hand the images and the per-view table to the loggers that show
    media (W&B, TensorBoard). ``out_dir=None``: the files go to a temporary folder for those loggers only.

    Args:
        result: what ``gaitkd.evaluation.evaluate`` returned.
        extra: more entries for ``test_metrics.json`` (e.g. ``num_sequences``).
        heatmap / cmc_ranks: ``evaluation.heatmap`` / ``evaluation.cmc_ranks`` (the CMC plot's last rank; 0: none).

    Returns:
        ``{image key: path}`` of the images written into ``out_dir`` (``{}`` without one).
    """
    media_loggers = [lg for lg in loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
    if out_dir is None and not media_loggers:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        images = write_result_files(result, Path(out_dir or tmp), extra, heatmap=heatmap, cmc_ranks=cmc_ranks)
        table = accuracy_table(result)
        for logger in media_loggers:
            if isinstance(logger, WandbLogger):
                _to_wandb(logger, images, table, step)
            else:
                _to_tensorboard(logger, images, table, step)
    return images if out_dir is not None else {}
