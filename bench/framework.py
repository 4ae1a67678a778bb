"""Framework overhead: a training step through Lightning's ``Trainer.fit`` vs the same step as a plain PyTorch loop.

    PYTHONPATH=src .venv/bin/python bench/framework.py --models gaitset gaitpart --p 4 --k 2 --frames 10

Per model config (``conf/student/<name>.yaml``, built by ``gaitkd.run.build_module`` as a training run builds it):

- *plain loop*: copies of the student (and its training-only aux head), the configured optimizer and scheduler;
  per step ``forward -> triplet + part CE (the configured weights) -> zero_grad -> backward -> step -> scheduler``;
- *Lightning*: the module in a real ``Trainer.fit`` built by ``gaitkd.run.build_trainer`` from the configured
  trainer and callbacks (progress bar off: it only draws), the CSV logger into a temporary folder; a step is
  everything from one batch end to the next (fetch, hooks, logging, closure, optimizer, scheduler).

The plain step runs right after each Trainer step (a callback, not counted in the Trainer's time), so slow drifts
of a shared machine hit both alike. The Trainer reads the same in-memory batch again and again (no loading cost);
``--warmup`` steps of each are not timed. With 2 + 10 steps the timed window holds one step where the logger
writes (``log_every_n_steps: 10``), as in training.
Ratio = Lightning step / plain step (target <= 1.05).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from torch.utils.data import DataLoader

from common import batch_parser, compose_run, figure, make_batch, stats
from gaitkd.loggers import build_loggers
from gaitkd.module import GaitKDModule
from gaitkd.run import build_module, build_trainer

MODELS = ("gaitset", "gaitgl", "gaitpart", "gaitbase", "deepgaitv2")
# batch (P ids, K sequences each, frames) per model: the 20-minute budget of `make bench` on 2 CPU cores
SIZES = {"gaitset": (4, 2, 10), "gaitgl": (4, 2, 10), "gaitpart": (4, 2, 10), "gaitbase": (2, 2, 10),
         "deepgaitv2": (2, 2, 10)}


def plain_step_fn(module: GaitKDModule, batch: dict[str, torch.Tensor]):
    """The module's training step written as a plain loop, on copies of its student and aux head."""
    student, aux = copy.deepcopy(module.student).train(), copy.deepcopy(module.aux_head)
    params = [*student.parameters(), *(aux.parameters() if aux is not None else ())]
    optimizer = module.optimizer_factory(params=params)
    scheduler = module.scheduler_factory(optimizer=optimizer) if module.scheduler_factory else None
    sils, labels = batch["sils"], batch["labels"]

    def step() -> None:
        out = student(sils)
        emb = out.train_embeddings
        loss = module.triplet_weight * module.triplet(embeddings=emb, labels=labels)[0].mean()
        logits = out.logits if out.logits is not None else (aux(emb) if aux is not None else None)
        if module.ce_weight and logits is not None:
            loss = loss + module.ce_weight * module.ce(logits=logits, labels=labels)[0].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    return step


class Interleaved(Callback):
    """Times the Trainer's steps and runs one plain step after each, so that both see the same machine state.

    At the end of batch ``i`` the Trainer's step ``i`` is ``now - mark`` (``mark``: the end of the previous plain
    step; hooks before and after this callback count once each), then the plain step runs (timed from ``warmup`` on)
    and ``mark`` is taken.
    """

    def __init__(self, plain_step, warmup: int) -> None:
        self.plain_step, self.warmup = plain_step, max(1, warmup)  # the first interval has no start
        self.trainer_runs: list[float] = []
        self.plain_runs: list[float] = []
        self.mark = 0.0
        self.batches = 0

    def on_train_batch_end(self, *args, **kwargs) -> None:
        now = time.perf_counter()
        timed = self.batches >= self.warmup
        if timed:
            self.trainer_runs.append(now - self.mark)
        with torch.enable_grad():
            self.plain_step()
        end = time.perf_counter()
        if timed:
            self.plain_runs.append(end - now)
        self.batches += 1
        self.mark = time.perf_counter()


def interleaved_steps(cfg, module: GaitKDModule, batch: dict, warmup: int, repeats: int) -> Interleaved:
    """A real ``Trainer.fit`` of ``warmup + repeats`` steps with a plain step after each (see ``Interleaved``)."""
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + repeats
        cfg.trainer.enable_progress_bar = False
        for key in [k for k, v in (cfg.get("callbacks") or {}).items() if "ProgressBar" in str(v.get("_target_"))]:
            del cfg.callbacks[key]
    timer = Interleaved(plain_step_fn(module, batch), warmup)  # copies the student before fit changes it
    trainer = build_trainer(cfg, build_loggers(cfg.get("logger")), extra_callbacks=(timer,))
    # batch_size=None: the loader hands on the in-memory batch as it is (a bare list would be taken as many loaders)
    trainer.fit(module, train_dataloaders=DataLoader([batch] * (warmup + repeats), batch_size=None))
    return timer


def bench_model(name: str, size: tuple[int, int, int], warmup: int, repeats: int, overrides=()) -> dict:
    """The framework-overhead figure of one student config."""
    p, k, frames = size
    batch = make_batch(p, k, frames)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_run([f"student={name}", "trainer=cpu", *overrides], tmp)
        torch.manual_seed(0)
        module = build_module(cfg, p, {})
        timer = interleaved_steps(cfg, module, batch, warmup, repeats)
    return figure("framework", name, stats(timer.trainer_runs), bound=stats(timer.plain_runs),
                  bound_name="plain PyTorch loop step", target=1.05, model=type(module.student).__name__,
                  batch=p * k, frames=frames, warmup=warmup, logger=list(cfg.logger or {}),
                  log_every_n_steps=int(cfg.trainer.log_every_n_steps))


def run(models=MODELS, sizes=None, warmup: int = 2, repeats: int = 5, log=print) -> list[dict]:
    """One figure per model; ``sizes`` maps a model to (P, K, frames) (default ``SIZES``)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    figures = []
    for name in models:
        p, k, frames = (sizes or SIZES).get(name, (2, 2, 10))
        fig = bench_model(name, (p, k, frames), warmup, repeats)
        figures.append(fig)
        log(f"  framework {name:>12} ({p * k} seqs x {frames} frames): Lightning {fig['value']['median']:.3f} s / "
            f"plain {fig['bound']['median']:.3f} s = {fig['ratio']:.3f}")
    return figures


def main() -> None:
    parser = batch_parser(__doc__, p=None, repeats=10)  # --p unset: the per-model SIZES
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    sizes = {m: (args.p, args.k, args.frames) for m in args.models} if args.p else None
    run(args.models, sizes, args.warmup, args.repeats)


if __name__ == "__main__":
    main()
