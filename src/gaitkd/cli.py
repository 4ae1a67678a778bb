"""`gaitkd` sub-commands: `export` (student alone, zero extra inference cost), `models` (the model zoo),
`check-data` (every problem of an OpenGait pkl folder at once), `prepare` (raw frames -> pkls), `study` (an ablation
study as one multirun) and `report` (a study's runs -> table and plots)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from gaitkd.errors import GaitKDError

CASIA_CLASSES = 74  # class_num used for `gaitkd models` (OpenGait's CASIA-B configs)


def _export(args: argparse.Namespace, console: Console) -> None:
    from gaitkd.export import export_student

    report = export_student(args.ckpt, args.out, frames=args.frames, onnx=args.onnx, repeats=args.repeats,
                            opengait_config=args.opengait_config)
    table = Table(title=f"exported student ({args.frames} frames, batch 1, CPU)")
    for col in ("", "params", "GFLOPs", "ms / sequence"):
        table.add_column(col, justify="right")
    table.add_row("exported (TorchScript)", f"{report.params:,}", f"{report.flops / 1e9:.2f}",
                  f"{report.latency_ms:.1f}")
    table.add_row("plain model", f"{report.plain_params:,}", f"{report.flops / 1e9:.2f}",
                  f"{report.plain_latency_ms:.1f}")
    console.print(table)
    console.print(f"wrote {report.path}" + (f" and {report.onnx_path}" if report.onnx_path else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2))


def model_rows(names: Sequence[str] | None = None, frames: int = 30) -> list[dict]:
    """Params, FLOPs at ``1 x frames x 64 x 44``, parts and width of each ``conf/student/<name>.yaml`` model."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from gaitkd.distill.branch import probe_shape
    from gaitkd.export import EmbeddingExport, count_flops
    from gaitkd.models import count_params
    from gaitkd.run import CONF_DIR, _model_config

    names = names or sorted(p.stem for p in (CONF_DIR / "student").glob("*.yaml"))
    rows = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in names:
            cfg = compose("run", overrides=[f"student={name}", "paths.output_dir=."])
            model = instantiate(_model_config(cfg.student.model, CASIA_CLASSES)).eval()
            shape = probe_shape(model)
            sils = torch.rand(1, frames, 64, 44)
            rows.append({"config": name, "model": type(model).__name__, "params": count_params(model),
                         "gflops": count_flops(EmbeddingExport(model), sils) / 1e9, "parts": shape.parts,
                         "channels": shape.channels, "classifier": shape.classes is not None})
    return rows


def _models(args: argparse.Namespace, console: Console) -> None:
    table = Table(title=f"gaitkd models (CASIA-B configs, {CASIA_CLASSES} classes, input 1x{args.frames}x64x44)")
    for col in ("student= / teacher=", "class", "params", "GFLOPs", "parts P", "width C", "classifier"):
        table.add_column(col, justify="left" if col in ("student= / teacher=", "class") else "right")
    for row in model_rows(args.names or None, args.frames):
        table.add_row(row["config"], row["model"], f"{row['params']:,}", f"{row['gflops']:.2f}", str(row["parts"]),
                      str(row["channels"]), "yes" if row["classifier"] else "no (aux head in KD)")
    console.print(table)


def _check_data(args: argparse.Namespace, console: Console) -> None:
    from gaitkd.data.check import check_dataset

    modalities = None if args.modalities is None else [int(m) if m.lstrip("-").isdigit() else m
                                                        for m in args.modalities]
    report = check_dataset(args.root, args.partition, modalities, workers=args.workers)
    console.print(report)
    if not report.ok:
        raise SystemExit(1)


def _prepare(args: argparse.Namespace, console: Console) -> None:
    from gaitkd.data.prepare import prepare

    summary = prepare(args.dataset, args.raw_dir, args.out_dir, workers=args.workers, img_size=args.img_size)
    table = Table(title=f"gaitkd prepare {args.dataset}: {args.raw_dir} -> {args.out_dir}")
    table.add_column("")
    table.add_column("count", justify="right")
    for label, value in summary.rows():
        table.add_row(label, value)
    console.print(table)
    for label, names in (("empty", summary.empty), ("short", summary.short), ("failed", summary.failed)):
        if names:
            console.print(f"[yellow]{label}:[/yellow] " + "; ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    if summary.failed:
        raise SystemExit(1)


def _study(args: argparse.Namespace, console: Console) -> None:
    from gaitkd.study import run_study

    cmd, sweep_dir = run_study(args.file, args.overrides, sweep_dir=args.sweep_dir, dry_run=args.dry_run)
    console.print(" ".join(cmd), soft_wrap=True, markup=False, highlight=False)
    if not args.dry_run:
        console.print(f"done; table: gaitkd report {sweep_dir}")


def _report(args: argparse.Namespace, console: Console) -> None:
    from gaitkd.report import report

    payload = report(args.run_dir, metrics=args.metrics, out_dir=args.out, label_key=args.label,
                     baseline=args.baseline)
    console.print(payload["table"], markup=False, highlight=False)
    console.print("wrote " + ", ".join([str(Path(args.out or args.run_dir) / "report.md"), *payload["plots"]]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gaitkd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write the student of a gaitkd checkpoint alone (TorchScript / ONNX)")
    exp.add_argument("ckpt", help="gaitkd checkpoint (outputs/<task>/<run>/checkpoints/last.ckpt), or an OpenGait "
                     "checkpoint with --opengait-config")
    exp.add_argument("--opengait-config", help="OpenGait YAML config of the model in an OpenGait checkpoint")
    exp.add_argument("out", help="output TorchScript file (.pt)")
    exp.add_argument("--frames", type=int, default=30, help="frames of the example input (latency, FLOPs)")
    exp.add_argument("--onnx", action="store_true", help="also write OUT.onnx (needs the `onnx` extra)")
    exp.add_argument("--repeats", type=int, default=5, help="timed repetitions for the latency median")
    exp.add_argument("--json", help="also write the report as JSON here")
    models = sub.add_parser("models", help="list the models with params, FLOPs, parts and width")
    models.add_argument("names", nargs="*", help="conf/student config names (default: all)")
    models.add_argument("--frames", type=int, default=30)
    check = sub.add_parser("check-data", help="list every problem of an OpenGait pkl folder (exit 1 on errors)")
    check.add_argument("root", help="dataset folder <root>/<id>/<type>/<view>/*.pkl")
    check.add_argument("--partition", help="OpenGait partition JSON (default: ROOT/partition.json if present)")
    check.add_argument("--workers", type=int, help="decoding threads (default: min(4, CPUs))")
    check.add_argument("--modalities", nargs="+", metavar="PKL",
                       help="pkls of each sequence to check, names or indices into the sorted pkl list (default: all; "
                       "the first is checked as silhouettes), as data.modalities")
    prep = sub.add_parser("prepare", help="raw silhouette frames (PNG/JPG folders or GIFs) -> OpenGait pkls")
    # Choices are checked by gaitkd.data.prepare (importing it here would slow down every sub-command).
    prep.add_argument("dataset", help="casia_b | oumvlp | gait3d | generic: how <id>/<type>/<view> are read from "
                      "the paths (see gaitkd.data.prepare)")
    prep.add_argument("raw_dir", help="raw dataset tree, e.g. CASIA-B <id>/<type>/<view>/*.png")
    prep.add_argument("out_dir", help="output folder: <id>/<type>/<view>/<view>.pkl")
    prep.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    prep.add_argument("--img-size", type=int, default=64, help="output height and width (OpenGait's --img_size)")
    study = sub.add_parser("study", help="run an ablation study of experiments/ as one Hydra multirun")
    study.add_argument("file", help="study file, e.g. experiments/branches.yaml")
    study.add_argument("overrides", nargs="*", help="extra Hydra overrides; a swept or base key given here replaces "
                       "the study's values (e.g. seed=0 distill=gaitkd,none)")
    study.add_argument("--sweep-dir", help="multirun folder (default: multirun/<study>/<time>)")
    study.add_argument("--dry-run", action="store_true", help="print the multirun command only")
    rep = sub.add_parser("report", help="a study's multirun folder -> markdown table (mean ± std over seeds) + PNGs")
    rep.add_argument("run_dir", help="the multirun folder (hydra.sweep.dir)")
    rep.add_argument("--metrics", nargs="+", help="metric columns (default: the evaluation headline metrics found)")
    rep.add_argument("--out", help="where report.md / report.json / PNGs go (default: RUN_DIR)")
    rep.add_argument("--label", help="name each row by this override's value (e.g. variant), not all varying ones")
    rep.add_argument("--baseline", help="a row's label (e.g. none): add each row's per-seed difference to it")
    args = parser.parse_args(argv)
    console = Console()
    try:
        commands = {"export": _export, "models": _models, "check-data": _check_data, "prepare": _prepare,
                    "study": _study, "report": _report}
        commands[args.command](args, console)
    except GaitKDError as err:
        console.print(f"[red]gaitkd: error:[/red] {err}")
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
