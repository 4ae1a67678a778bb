"""Training-loader throughput: gaitkd's ``GaitDataModule.train_dataloader()`` vs an emulation of OpenGait's loader.

    .venv/bin/python bench/loader.py [--batches 40] [--repeats 3] [--quick]

Both pipelines read the same generated folder of 64x64 uint8 pkls (OpenGait's pretreatment output size, 60-100
frames per sequence) and deliver P x K = 8 x 8 sequences x 30 frames of 64x44 float32 per batch, with the pkl cache
off / on and 0 / 2 DataLoader workers (persistent). The page cache is warm (every pkl is read before timing).

``OPENGAIT-STYLE EMULATION`` (below) is *not* OpenGait's code (OpenGait is not installed here): it is written from
the description of OpenGait's pipeline: DataSet (``pickle.load`` of every pkl per item, or a RAM cache filled at
start), TripletSampler (P ids by ``torch.randperm``, K sequences each), CollateFn ``fixed_unordered``
(``np.random.choice`` of 30 frames per sequence) and, in the training process as OpenGait's
``inputs_pretreament``, ``BaseSilCuttingTransform`` (float64 ``x / 255.0`` of the 30 sampled 64x64 frames, then
the 10-column cut each side) and the stack to a float32 tensor.

Also measured: one full-width GaitSet training step (``conf/student/gaitset.yaml``, forward + backward + SGD step
through the LightningModule) on a ``--step-p`` x ``--step-k`` batch (default 4 x 4: the 8 x 8 step takes ~17 s
here), compared per sequence with the loader time of each gaitkd condition. Every ratio comes from one run; each
throughput is the median over ``--repeats`` epochs measured in turn (conditions interleaved).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gaitkd.data import GaitDataModule

sys.path.insert(0, str(Path(__file__).parent))
from common import compose_run, timed_runs  # noqa: E402  (bench/ is not a package)
from kd_step import make_module, step_fn  # noqa: E402

P, K, FRAMES, SIDE, CUT = 8, 8, 30, 64, 10


def write_corpus(root: Path, ids: int, types: int, views: int, seed: int = 0) -> dict:
    """``root/<id>/<type>/<view>/<view>.pkl``: uint8 ``[T, 64, 64]`` walking-blob silhouettes, T uniform in
    [60, 100]; the last two ids are the test set. Returns a summary."""
    rng = np.random.default_rng(seed)
    names = [f"{i:03d}" for i in range(1, ids + 1)]
    rows, cols = np.mgrid[:SIDE, :SIDE]
    frames = 0
    for sid in names:
        for typ in range(types):
            for view in range(views):
                t = int(rng.integers(60, 101))
                centre = 32 + 6 * np.sin(np.linspace(0, 6, t) + rng.random() * 6)[:, None, None]
                body = (np.abs(cols[None] - centre) < 8) & (rows[None] > 4)
                folder = root / sid / f"nm-{typ + 1:02d}" / f"{view * 18:03d}"
                folder.mkdir(parents=True)
                (folder / f"{view * 18:03d}.pkl").write_bytes(pickle.dumps(body.astype(np.uint8) * 255))
                frames += t
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": names[:-2], "TEST_SET": names[-2:]}))
    return {"ids": ids, "train_ids": ids - 2, "sequences": ids * types * views, "frames": frames,
            "frame_size": [SIDE, SIDE], "lengths": [60, 100]}


# ------------------------------------------------------------------------------- OPENGAIT-STYLE EMULATION
class EmulatedDataSet:
    """OpenGait-style DataSet: item -> (list of modality arrays, (label, type, view)); cache = all in RAM at start."""

    def __init__(self, root: Path, train_ids: set[str], cache: bool) -> None:
        self.paths = sorted(p for p in root.glob("*/*/*/*.pkl") if p.parts[-4] in train_ids)
        self.info = [p.parts[-4:-1] for p in self.paths]
        self.label_set = sorted(train_ids)
        self.indices_dict = {lab: [i for i, inf in enumerate(self.info) if inf[0] == lab] for lab in self.label_set}
        self.data = [self._load(i) for i in range(len(self))] if cache else None

    def _load(self, index: int) -> list[np.ndarray]:
        with open(self.paths[index], "rb") as handle:
            return [pickle.load(handle)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return (self.data[index] if self.data is not None else self._load(index)), self.info[index]


class EmulatedTripletSampler:
    """P ids by ``torch.randperm``, K sequences each (without replacement when possible); ``steps`` per epoch."""

    def __init__(self, dataset: EmulatedDataSet, steps: int) -> None:
        self.dataset, self.steps = dataset, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        labels = self.dataset.label_set
        for _ in range(self.steps):
            batch = []
            for pid in torch.randperm(len(labels))[:P].tolist():
                members = self.dataset.indices_dict[labels[pid]]
                if len(members) >= K:
                    batch += [members[j] for j in torch.randperm(len(members))[:K].tolist()]
                else:
                    batch += random.choices(members, k=K)
            yield batch


def emulated_collate(batch):
    """CollateFn ``fixed_unordered``: 30 random frames of every sequence, label indices; frames stay uint8 lists."""
    frames, labels = [], []
    for data, info in batch:
        seq = data[0]
        picked = np.random.choice(len(seq), FRAMES, replace=len(seq) < FRAMES)
        frames.append(seq[picked])
        labels.append(info[0])
    return frames, labels


def emulated_pretreatment(frames: list[np.ndarray]) -> torch.Tensor:
    """``BaseSilCuttingTransform`` per sequence (float64 / 255 of the 64x64 frames, then the cut) + float32 stack."""
    return torch.from_numpy(np.asarray([(seq / 255.0)[..., CUT:-CUT] for seq in frames])).float()


def emulated_loader(root: Path, train_ids: set[str], cache: bool, workers: int, steps: int):
    dataset = EmulatedDataSet(root, train_ids, cache)
    loader = DataLoader(dataset, batch_sampler=EmulatedTripletSampler(dataset, steps), collate_fn=emulated_collate,
                        num_workers=workers, persistent_workers=workers > 0)
    return loader, lambda batch: emulated_pretreatment(batch[0])
# ------------------------------------------------------------------------------------------ end of emulation


def gaitkd_datamodule(root: Path, cache: bool, workers: int, steps: int, p: int = P, k: int = K,
                      frames: int = FRAMES) -> GaitDataModule:
    dm = GaitDataModule(root=str(root), batch_p=p, batch_k=k, train_frames=frames, cache=cache, num_workers=workers,
                        persistent_workers=True, steps_per_epoch=steps)
    dm.setup("fit")
    return dm


def epoch_rate(loader, finish) -> float:
    """Batches per second over one epoch (``finish`` turns a loader batch into the float32 model input)."""
    start = time.perf_counter()
    n = 0
    for batch in loader:
        sils = finish(batch)
        n += 1
    assert sils.dtype == torch.float32 and sils.shape[-2:] == (SIDE, SIDE - 2 * CUT)
    return n / (time.perf_counter() - start)


def bench_loaders(root: Path, train_ids: set[str], args) -> list[dict]:
    setups = {}
    for cache in (False, True):
        for workers in (0, 2):
            setups[("opengait_emulated", cache, workers)] = emulated_loader(root, train_ids, cache, workers,
                                                                            args.batches)
            dm = gaitkd_datamodule(root, cache, workers, args.batches)
            setups[("gaitkd", cache, workers)] = dm.train_dataloader(), lambda batch: batch["sils"]
    rates: dict[tuple, list[float]] = {key: [] for key in setups}
    for loader, finish in setups.values():  # warm-up epoch: page cache, worker start-up
        epoch_rate(loader, finish)
    for _ in range(args.repeats):
        for key, (loader, finish) in setups.items():
            rates[key].append(epoch_rate(loader, finish))
    return [{"pipeline": key[0], "cache": key[1], "workers": key[2], "batches_per_s": statistics.median(r),
             "runs": r} for key, r in rates.items()]


def bench_step(root: Path, args) -> dict:
    cfg = compose_run([f"student={args.step_student}"])
    dm = gaitkd_datamodule(root, False, 0, 1, p=args.step_p, k=args.step_k, frames=args.step_frames)
    batch = next(iter(dm.train_dataloader()))
    module = make_module(cfg, dm.num_classes, None).train()
    runs = timed_runs(step_fn(module, batch), args.step_repeats)
    seconds = statistics.median(runs)
    n = args.step_p * args.step_k
    return {"student": args.step_student, "model": type(module.student).__name__, "batch": n,
            "frames": args.step_frames, "step_s": seconds, "step_runs": runs,
            "step_ms_per_seq": 1000 * seconds / n}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per condition (median)")
    parser.add_argument("--ids", type=int, default=18, help="identities generated (the last two are test ids)")
    parser.add_argument("--types", type=int, default=10)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--step-student", default="gaitset")
    parser.add_argument("--step-p", type=int, default=4)
    parser.add_argument("--step-k", type=int, default=4)
    parser.add_argument("--step-frames", type=int, default=FRAMES)
    parser.add_argument("--step-repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests, numbers meaningless)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loader.json")
    return parser


def run(args: argparse.Namespace, log=print) -> dict:
    """Every loader condition and the GaitSet step; ``{"meta", "rows", "step"}`` as written to ``--out``."""
    if args.quick:
        args.batches, args.repeats, args.ids, args.types, args.views = 2, 1, P + 2, K, 1
        args.step_p, args.step_k, args.step_frames, args.step_repeats = 2, 2, 8, 1
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkls"
        data = write_corpus(root, args.ids, args.types, args.views)
        train_ids = set(json.loads((root / "partition.json").read_text())["TRAIN_SET"])
        rows = bench_loaders(root, train_ids, args)
        step = bench_step(root, args)
    by_key = {(r["pipeline"], r["cache"], r["workers"]): r["batches_per_s"] for r in rows}
    for row in rows:
        key = (row["cache"], row["workers"])
        if row["pipeline"] == "gaitkd":
            row["speedup_vs_emulated"] = row["batches_per_s"] / by_key[("opengait_emulated", *key)]
            row["loader_ms_per_seq"] = 1000 / (row["batches_per_s"] * P * K)
            row["loader_over_step"] = row["loader_ms_per_seq"] / step["step_ms_per_seq"]
        log(f"{row['pipeline']:>17} cache={row['cache']!s:<5} workers={row['workers']}: "
            f"{row['batches_per_s']:7.1f} batches/s" + (f"  x{row['speedup_vs_emulated']:.2f} vs emulated, "
            f"loader/step {row['loader_over_step']:.4f}" if "loader_over_step" in row else ""))
    log(f"{step['model']} step ({step['batch']} seqs x {step['frames']} frames): {step['step_s']:.2f} s, "
        f"{step['step_ms_per_seq']:.1f} ms/seq")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
            "batch": [P, K, FRAMES], "batches_per_epoch": args.batches, "repeats": args.repeats, "data": data,
            "quick": args.quick}
    return {"meta": meta, "rows": rows, "step": step}


def main() -> None:
    args = parser().parse_args()
    result = run(args, log=lambda line: print(line, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
