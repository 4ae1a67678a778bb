"""The LightningModule: the one place where the student, the frozen teachers and the KD branches meet.

Training step: student forward -> task losses (triplet + part-wise CE) -> for each teacher in turn: its forward
under ``inference_mode`` -> its KD branch terms (decision + boundary) -> one weighted sum (teachers combined by
``sum`` / ``mean`` / ``weighted``, see :mod:`gaitkd.teachers`). Every component is logged on its own.
Test step: the student embeds packed variable-length sequences; an ``EmbeddingCollector`` gathers them
(DDP-correct) and the dataset's protocol is computed at the end, exactly as OpenGait computes it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from gaitkd.distill import AuxPartClassifier, weighted_sum
from gaitkd.distill.branch import KDBranch, probe_shape
from gaitkd.evaluation import EmbeddingCollector, evaluate
from gaitkd.evaluation.report import print_result
from gaitkd.losses import PartCrossEntropyLoss, TripletLoss
from gaitkd.models.output import GaitOutput
from gaitkd.numerics import NonFiniteGuard
from gaitkd.perf import Perf, forward_fn, to_channels_last
from gaitkd.publish import publish
from gaitkd.resume import capture_rng, restore_rng
from gaitkd.teachers import SINGLE_TEACHER, Teacher, combine_factors, combine_terms, takes_part

TEACHER_PREFIX = "teachers."
STUDENT_CONFIG_KEY = "gaitkd_student_config"
RESUME_KEY = "gaitkd_resume"


class GaitKDModule(L.LightningModule):
    """Student training with optional GaitKD distillation from one or several frozen teachers.

    Teachers live in ``self.teachers`` (``nn.ModuleDict``, name -> model) with one ``KDBranch`` each in ``self.kd``.
    They are always in eval mode (also after Lightning's ``.train()``), never in the optimizer and stripped from
    every checkpoint (re-inserted on load, so strict loading works). In a training step they run one after the
    other under ``torch.inference_mode()``: only one teacher's activations are alive at a time, and of each teacher
    only its outputs (embeddings, logits) are kept for its KD terms. Terms are logged as ``train/<name>/<term>``.

    Args:
        student: the plain student ``nn.Module`` (returns ``GaitOutput``); the only thing that is exported.
        num_classes: number of training identities (for the training-only aux classifier).
        optimizer / scheduler: partial constructors (Hydra ``_partial_: true``); scheduler may be ``None``.
        teachers: name -> :class:`gaitkd.teachers.Teacher` (model, its distill config, logit scale, weight); a
            teacher that adds no KD term (no loss on, or weight 0 under ``weighted``) is dropped, never run.
        combine: how the teachers' KD terms add up: ``sum`` | ``mean`` | ``weighted`` (``Teacher.weight``).
        teacher: shorthand for ``teachers={"teacher": Teacher(teacher, distill, teacher_logit_scale)}``.
        distill: ``{part_align, connector, decision, boundary}`` (see ``conf/distill``) of ``teacher`` or ``None``.
        loss: ``{triplet: {margin, weight}, ce: {weight}}``.
        student_head: ``{aux_classifier, logit_scale, label_smooth}`` of the student.
        student_config: the student's model config (``_target_`` + kwargs), stored in checkpoints for export.
        teacher_logit_scale: scale of ``teacher``'s logits (GaitGL raw: 1, cosine heads: 16).
        evaluation: ``{protocol, metric, cross_view_gallery, rerank, heatmap, cmc_ranks}`` (see
            ``gaitkd.evaluation.evaluate`` and ``gaitkd.publish.publish``).
        output_dir: where metrics / plots of the test go (``None``: nothing written; loggers still get the plots).
        perf: speed switches of the training step (:class:`gaitkd.perf.Perf` or its config mapping; default: off).
    """

    def __init__(
        self,
        student: nn.Module,
        num_classes: int,
        optimizer: partial,
        scheduler: partial | None = None,
        teacher: nn.Module | None = None,
        distill: dict | None = None,
        loss: dict | None = None,
        student_head: dict | None = None,
        teacher_logit_scale: float = 1.0,
        evaluation: dict | None = None,
        output_dir: str | None = None,
        input_size: tuple[int, int] = (64, 44),
        student_config: dict | None = None,
        teachers: Mapping[str, Teacher] | None = None,
        combine: str = "sum",
        perf: Perf | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        loss = loss or {"triplet": {"margin": 0.2, "weight": 1.0}, "ce": {"weight": 1.0}}
        head = student_head or {"aux_classifier": False, "logit_scale": 16.0, "label_smooth": True}
        self.evaluation = evaluation or {"protocol": "casia_b", "metric": "euc", "heatmap": False}
        self.output_dir = Path(output_dir) if output_dir else None
        self.student_config = student_config  # the student's model config (with _target_), kept for export
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

        self.student = student
        s_shape = probe_shape(student, tuple(input_size))
        self.aux_head: nn.Module | None = None
        if s_shape.classes is None and head.get("aux_classifier", False):
            self.aux_head = AuxPartClassifier(s_shape.parts, s_shape.channels, num_classes)
            s_shape = type(s_shape)(s_shape.channels, s_shape.parts, num_classes)
        if s_shape.classes is not None and s_shape.classes != num_classes:
            raise ValueError(f"student has {s_shape.classes} classes but the dataset has {num_classes} training ids")

        self.nonfinite = NonFiniteGuard(str(loss.get("on_nonfinite", "raise")), int(loss.get("max_skipped_steps", 50)))
        self._drop_gradients = False
        self.triplet_weight = float(loss["triplet"].get("weight", 1.0))
        self.triplet = TripletLoss(margin=float(loss["triplet"].get("margin", 0.2)))
        self.ce_weight = float(loss.get("ce", {}).get("weight", 1.0)) if s_shape.classes is not None else 0.0
        self.ce = PartCrossEntropyLoss(scale=float(head.get("logit_scale", 16.0)),
                                       label_smooth=bool(head.get("label_smooth", True)))

        specs = dict(teachers or {})
        if teacher is not None:
            if specs:
                raise ValueError("pass either teacher= or teachers=, not both")
            specs[SINGLE_TEACHER] = Teacher(teacher, dict(distill or {}), teacher_logit_scale)
        specs = {name: spec for name, spec in specs.items() if takes_part(spec.distill, spec.weight, combine)}
        self.kd_factors = combine_factors(combine, {name: spec.weight for name, spec in specs.items()})
        self.teachers = nn.ModuleDict()
        self.kd = nn.ModuleDict()
        for name, spec in specs.items():
            self.teachers[name] = spec.model.requires_grad_(False).eval()
            t_shape = probe_shape(spec.model, tuple(input_size))
            if t_shape.classes is not None and t_shape.classes != num_classes:
                raise ValueError(
                    f"teacher {name!r} has {t_shape.classes} classes but the dataset has {num_classes} training "
                    "identities; use a teacher trained on this dataset's training split"
                )
            self.kd[name] = KDBranch(
                s_shape, t_shape,
                decision=spec.distill.get("decision"), boundary=spec.distill.get("boundary"),
                part_align=spec.distill.get("part_align", "pool"), connector=spec.distill.get("connector", "student"),
                student_logit_scale=float(head.get("logit_scale", 16.0)), teacher_logit_scale=spec.logit_scale,
            )
        self.perf = perf if isinstance(perf, Perf) else Perf.from_config(perf)
        if self.perf.channels_last:
            for model in (self.student, *self.teachers.values()):
                to_channels_last(model)
        self._forwards: dict[str, Any] = {}  # training-step forwards (compiled lazily), kept out of the state dict
        self.collector = EmbeddingCollector()
        self._resume_rng: dict[str, Any] | None = None
        self._infer_seconds = 0.0
        self._infer_sequences = 0

    # ----------------------------------------------------------------------------------------------------- teacher
    def train(self, mode: bool = True) -> GaitKDModule:
        """Lightning calls ``.train()`` on the whole module every epoch: keep the teachers' BatchNorm frozen."""
        super().train(mode)
        self.teachers.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Student checkpoints never hold teacher weights; they carry the student's model config for export and
        what an exact resume needs beyond Lightning's state (RNGs, the count of skipped non-finite steps)."""
        if self.student_config is not None:
            checkpoint[STUDENT_CONFIG_KEY] = self.student_config
        checkpoint[RESUME_KEY] = {"rng": capture_rng(), "skipped_steps": self.nonfinite.skipped}
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Re-insert the (separately loaded) teacher weights so a strict load of a student checkpoint works."""
        for key, value in self.teachers.state_dict().items():
            checkpoint["state_dict"].setdefault(TEACHER_PREFIX + key, value)
        resume = checkpoint.get(RESUME_KEY)
        if resume is not None:
            self.nonfinite.skipped = int(resume["skipped_steps"])
            self._resume_rng = resume["rng"]

    def on_train_start(self) -> None:
        """RNGs of a resumed run are restored here, after the training loader started (which draws from torch's
        RNG), so the next step draws exactly what it drew in the uninterrupted run."""
        if self._resume_rng is not None:
            restore_rng(self._resume_rng)
            self._resume_rng = None

    # ---------------------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        sils, labels = batch["sils"], batch["labels"]
        # packed variable-length batches (unfixed_* sampling) carry seqL; the same tensor goes to every model
        packed = {"seqL": batch["seqL"]} if "seqL" in batch else {}
        out_s = self._forward("student", self.student, self.perf.compile_student)(sils, **packed)
        emb_s = out_s.train_embeddings
        logits_s = out_s.logits if out_s.logits is not None else (
            self.aux_head(emb_s) if self.aux_head is not None else None)

        terms: dict[str, tuple[float, Tensor]] = {}
        trip, trip_info = self.triplet(embeddings=emb_s, labels=labels)
        terms["triplet"] = (self.triplet_weight, trip)
        if self.ce_weight and logits_s is not None:
            ce, ce_info = self.ce(logits=logits_s, labels=labels)
            terms["ce"] = (self.ce_weight, ce)
            self.log("train/ce_accuracy", ce_info["accuracy"], on_step=True)
        # one teacher after the other: each forward's activations are freed before the next teacher runs
        per_teacher = {name: self._teacher_terms(name, sils, packed, out_s, logits_s, labels) for name in self.teachers}
        terms.update(combine_terms(per_teacher, self.kd_factors))
        total = weighted_sum(terms)
        if self.nonfinite.skip(terms, self.global_step):  # NaN / inf on some rank: every rank skips the update
            # the loss still goes backward (under DDP each rank must join the gradient all-reduce; Lightning refuses
            # a None step there); on_before_optimizer_step drops the gradients, so the optimizer changes nothing
            self._drop_gradients = True
            self.log("train/skipped_steps", float(self.nonfinite.skipped), on_step=True)
            return total

        for name, (_, value) in terms.items():
            self.log(f"train/{name}", value.detach().mean(), on_step=True)
        self.log("train/triplet_active", trip_info["loss_num"].float().mean(), on_step=True)
        self.log("train/loss", total.detach(), on_step=True, prog_bar=True)
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._drop_gradients:  # a skipped non-finite step: no gradient, so no parameter or optimizer state moves
            optimizer.zero_grad(set_to_none=True)
            self._drop_gradients = False

    def _teacher_terms(
        self, name: str, sils: Tensor, packed: dict[str, Tensor], out_s: GaitOutput, logits_s: Tensor | None,
        labels: Tensor,
    ) -> dict[str, tuple[float, Tensor]]:
        """Teacher ``name``'s forward (no graph, activations freed on return) and its KD branch's terms."""
        forward = self._forward(TEACHER_PREFIX + name, self.teachers[name], self.perf.compile_teacher)
        with self.perf.teacher_context(sils.device.type):
            out_t = forward(sils, **packed)
        # a fresh float32 copy: inference tensors cannot be saved for the student's backward; autocast gives bf16
        out_t = out_t.map(lambda t: t.to(torch.float32, copy=True))
        if out_t.logits is not None:  # a teacher at chance level makes decision KD pure noise: show it
            teacher_acc = (out_t.logits.argmax(1) == labels[:, None]).float().mean()
            self.log(f"train/{name}/teacher_accuracy", teacher_acc, on_step=True)
        return self.kd[name](out_s, logits_s, out_t, labels=labels)

    def _forward(self, key: str, model: nn.Module, compile_it: bool) -> Any:
        """The callable a training step uses for ``model`` (``perf.compile_*``: compiled on first use)."""
        if key not in self._forwards:
            self._forwards[key] = forward_fn(model, compile_it)
        return self._forwards[key]

    def configure_optimizers(self) -> Any:
        params = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(TEACHER_PREFIX)]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------------------- evaluation
    def on_test_epoch_start(self) -> None:
        self.collector.reset()
        self._infer_seconds, self._infer_sequences = 0.0, 0

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        start = time.perf_counter()
        emb = self.student(batch["sils"], seqL=batch["seqL"]).embeddings
        self._infer_seconds += time.perf_counter() - start
        self._infer_sequences += len(batch["seqL"])
        self.collector.update(emb.float(), batch["index"])

    def on_test_epoch_end(self) -> None:
        embeddings, index = self.collector.compute()
        self.infer_ms_per_seq = 1000.0 * self._infer_seconds / max(self._infer_sequences, 1)
        self.result = {}
        if self.trainer.fast_dev_run:  # one batch is not a test set: the protocol would see empty galleries
            rank_zero_info("fast_dev_run: evaluation protocol skipped (only one test batch was embedded)")
            return
        meta = self.trainer.datamodule.test_meta
        idx = index.tolist()
        ev = self.evaluation
        cmc_ranks = int(ev.get("cmc_ranks") or 0)
        result = evaluate(
            ev.get("protocol", "casia_b"), embeddings,
            [meta["labels"][i] for i in idx], [meta["types"][i] for i in idx], [meta["views"][i] for i in idx],
            metric=ev.get("metric", "euc"), cross_view_gallery=bool(ev.get("cross_view_gallery", False)),
            probe_set=meta.get("probe_set"), rerank=ev.get("rerank"), cmc_ranks=cmc_ranks,
        )
        self.result = result
        headline = {k: float(v) for k, v in result.items() if isinstance(v, float)}
        for key, value in headline.items():
            self.log(f"test/{key}", value, sync_dist=False)
        self.log("test/num_sequences", float(len(idx)))
        if self.trainer.is_global_zero:
            if "per_view" in result or "acc_per_view" in result:
                print_result(result, title=f"{ev.get('protocol')} rank-1 per probe view (%)")
            else:
                rank_zero_info(" ".join(f"{k} {v:.2f}" for k, v in headline.items()))
            publish(result, self.output_dir, self.loggers, step=self.global_step, heatmap=bool(ev.get("heatmap")),
                    cmc_ranks=cmc_ranks, extra={"num_sequences": len(idx), "infer_ms_per_seq": self.infer_ms_per_seq})
