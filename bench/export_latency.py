"""Exported student vs the same model built plainly: params, FLOPs and CPU latency per sequence (batch 1).

    .venv/bin/python bench/export_latency.py [--frames 30] [--repeats 5]

Uses the OpenGait model fixtures (``$GAITKD_FIXTURES/models/*.pt``: OpenGait config + weights) through the same
path a user takes with an OpenGait checkpoint: ``gaitkd export CKPT OUT --opengait-config CONFIG``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gaitkd.export import export_student

REPO = Path(__file__).resolve().parents[1]


def default_fixtures() -> Path:
    return Path(os.environ.get("GAITKD_FIXTURES", REPO.parent / "shared" / "fixtures"))


def measure(fixtures: Path, frames: int = 30, repeats: int = 5, models: list[str] | None = None,
            log=print) -> list[dict]:
    """One export report per fixture model (``models``: a subset of the file stems, e.g. ``GaitPart``)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((fixtures / "models").glob("*.pt")):
            if models is not None and path.stem not in models:
                continue
            fx = torch.load(path, weights_only=True)
            ckpt, config = Path(tmp) / f"{path.stem}.ckpt", Path(tmp) / f"{path.stem}.yaml"
            torch.save({"model": fx["state_dict"]}, ckpt)
            OmegaConf.save(OmegaConf.create(fx["config"]), config)
            report = export_student(ckpt, Path(tmp) / f"{path.stem}_ts.pt", frames=frames,
                                    repeats=repeats, opengait_config=config).as_dict()
            report.update(model=path.stem, latency_ratio=report["latency_ms"] / report["plain_latency_ms"])
            rows.append(report)
            log(f"{path.stem:>12}: params {report['params']:,} (plain {report['plain_params']:,}), "
                f"{report['flops'] / 1e9:.2f} GFLOPs, exported {report['latency_ms']:.1f} ms vs plain "
                f"{report['plain_latency_ms']:.1f} ms per sequence, ratio {report['latency_ratio']:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", type=Path, default=default_fixtures())
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=None, help="fixture model names (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export_latency.json")
    args = parser.parse_args()
    rows = measure(args.fixtures, args.frames, args.repeats, args.models, log=lambda x: print(x, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "frames": args.frames}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
