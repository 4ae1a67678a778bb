"""LightningDataModule: partition -> datasets -> P×K training loader and packed evaluation loader.

Under DDP the samplers split data across ranks themselves (see :mod:`gaitkd.data.sampler`): run the trainer with
``use_distributed_sampler=False``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader

from gaitkd.data.check import SEQUENCE_KINDS, Report, check_dataset
from gaitkd.data.dataset import GaitDataError, GaitDataWarning, GaitSequenceDataset, parse_modalities, require_root
from gaitkd.data.partition import Partition, resolve_partition
from gaitkd.data.sampler import InferenceBatchSampler, PKBatchSampler, SeededBatches
from gaitkd.data.sampling import FrameSampler, collate_eval
from gaitkd.data.transforms import TrainCollate, build_augment

# Lightning cannot see that the training loader is resumable (its position is restored through state_dict below)
warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before the epoch ended",
                        PossibleUserWarning)


class TrainFrames:
    """Training view: item ``(index, seed)`` -> ``(frames uint8 [T, H, W], class index, index, seed, *extra)``.

    The seed is passed on so :class:`gaitkd.data.transforms.TrainCollate` can seed the batch's augmentation;
    ``extra`` are the other selected modalities at the same frame indices (none with one modality).
    """

    def __init__(self, dataset: GaitSequenceDataset, classes: np.ndarray, frames: FrameSampler) -> None:
        self.dataset, self.classes, self.frames = dataset, classes, frames

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple:
        index, seed = item
        seq, *extra = self.dataset.load(index)
        picked = self.frames(len(seq), np.random.default_rng(seed))
        return seq[picked], int(self.classes[index]), index, seed, *(e[picked] for e in extra)


class EvalFrames:
    """Evaluation view: item ``index`` -> ``(frames uint8 [T, H, W], index, *extra)``, all frames up to ``limit``."""

    def __init__(self, dataset: GaitSequenceDataset, limit: int | None) -> None:
        self.dataset, self.limit = dataset, limit

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        seq, *extra = (a[: self.limit] for a in self.dataset.load(index))
        return seq, index, *extra


class GaitDataModule(L.LightningDataModule):
    """OpenGait pkl folder + partition JSON as Lightning dataloaders.

    Training batches: ``sils`` float32 ``[P*K, train_frames, H, W]``, ``labels`` int64 (index into the sorted
    training ids), ``index``. Evaluation batches: ``sils`` ``[1, ΣT, H, W]``, ``seqL`` ``[B]``, ``index`` ``[B]``
    (indices into ``test_set``; metadata in ``test_meta``).

    ``train_sample``: OpenGait's sample types ``fixed_unordered`` / ``fixed_ordered`` (``train_frames`` frames per
    sequence; ``frames_skip`` widens the ordered window) and ``unfixed_unordered`` / ``unfixed_ordered`` (each
    sequence draws its own frame count uniformly in ``[train_frames_min, train_frames_max]``, then its frames as the
    fixed mode; ``train_frames`` is unused). Unfixed training batches are packed like evaluation batches:
    ``sils`` ``[1, ΣT, H, W]`` plus ``seqL`` ``[P*K]``, and the LightningModule passes ``seqL`` to the student and
    the teacher.

    Partition: ``partition`` (OpenGait JSON) if given, else ``<root>/partition.json`` if present, else OpenGait's
    published split as a rule over the ids on disk when ``partition_rule`` is ``casia_b`` or ``oumvlp``.

    ``synthetic``: keyword arguments of :func:`gaitkd.data.synthetic.ensure_synthetic` (incl. ``cache_dir``); when
    given, the generated folder replaces ``root``. ``ensure_synthetic`` is called on every rank in ``setup`` too and
    must be idempotent (it returns the cached folder once generated).

    ``on_error``: ``setup`` runs :func:`gaitkd.data.check.check_dataset` over the ids in use before anything
    trains. ``"raise"``: any error -> one :class:`GaitDataError` carrying the report. ``"skip"``: sequences with
    errors confined to them are left out of train / test, with one warning giving counts per kind, and their count
    is ``skipped_sequences``; errors not confined to one sequence (layout, partition) still raise. With
    ``cache=True`` the arrays the check decoded fill the cache (each pkl is decoded once).

    ``modalities`` (OpenGait's ``data_in_use``): which pkls of each sequence folder are read, as pkl names
    (``[sils.pkl]``), indices into the sorted pkl list (``[1]``) or a bool mask (``[false, true]``); ``None`` reads
    every pkl, as OpenGait. The first selected pkl is the model input ``sils`` (uint8 ``[T, H, W]``; with a
    sils + pose folder select the silhouette pkl, e.g. ``[sils.pkl]``, or put it first). Further selected pkls are
    read with the same frame indices (equal frame counts required) and delivered as-is (dtype kept, square
    ``[T, H, H]`` arrays width-cut like ``sils``, never augmented) in ``batch["extra"]``, one tensor per modality in
    selection order, laid out like ``sils`` (``[N, T, ...]``, or packed ``[1, ΣT, ...]``); the models ignore them.

    ``augment``: ``data.augment`` keys of :class:`gaitkd.data.transforms.SequenceAugment` (probabilities per
    sequence, 0 = off). Applied to training batches only, once per batch in the collate, so the student and the
    teacher receive the same augmented ``sils``; reproducible from ``seed`` like frame sampling.
    """

    def __init__(
        self,
        root: str | None = None,
        partition: str | None = None,
        partition_rule: str | None = None,
        batch_p: int = 8,
        batch_k: int = 4,
        train_frames: int = 30,
        train_sample: str = "fixed_unordered",
        train_frames_min: int | None = None,
        train_frames_max: int | None = None,
        frames_skip: int = 0,
        eval_frames_limit: int | None = None,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        cache: bool = False,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        synthetic: dict[str, Any] | None = None,
        on_error: str = "raise",
        augment: dict[str, Any] | None = None,
        modalities: Any = None,
    ) -> None:
        super().__init__()
        self.modalities = parse_modalities(modalities)
        if root is None and synthetic is None:
            raise GaitDataError("set data.root to an OpenGait pkl folder, or use data=synthetic")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.skipped_sequences = 0
        self.root, self.partition, self.synthetic = root, partition, synthetic
        self.partition_rule = partition_rule
        self.batch_p, self.batch_k, self.steps_per_epoch, self.seed = batch_p, batch_k, steps_per_epoch, seed
        self.train_sampler = FrameSampler(
            train_sample, train_frames, frames_skip, min_frames=train_frames_min, max_frames=train_frames_max
        )
        self.augment = build_augment(augment)
        if eval_frames_limit is not None and eval_frames_limit < 1:
            raise ValueError(f"data.eval_frames_limit must be >= 1 or null, got {eval_frames_limit}")
        if eval_batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be >= 1, got {eval_batch_size}")
        self.eval_frames_limit = eval_frames_limit
        self.eval_batch_size, self.cache = eval_batch_size, cache
        self.loader_kwargs = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers and num_workers > 0,
        }
        self.num_classes: int | None = None
        self.train_set: GaitSequenceDataset | None = None
        self.test_set: GaitSequenceDataset | None = None
        self.test_meta: dict[str, list[str] | None] | None = None
        self._train_batches: SeededBatches | None = None
        self._resume_at: int | None = None

    def _resolve_root(self) -> Path:
        if self.synthetic is not None:
            from gaitkd.data.synthetic import ensure_synthetic  # heavy generator only when asked for

            return Path(ensure_synthetic(**self.synthetic))
        return require_root(self.root)

    def _load_partition(self, root: Path) -> Partition:
        return resolve_partition(root, self.partition, self.partition_rule)

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self._resolve_root()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = self._resolve_root()
        part = self._load_partition(root)
        report = self._check(root, part)
        kw = {"modalities": self.modalities, "cache": self.cache, "exclude": report.bad_sequences}
        train_set = GaitSequenceDataset(root, ids=part.train, **kw)
        test_set = GaitSequenceDataset(root, ids=part.test, **kw)
        for name, dataset in (("TRAIN_SET", train_set), ("TEST_SET", test_set)):
            self.skipped_sequences += dataset.excluded
            dataset.seed_cache(report.arrays)  # each pkl the check decoded is decoded once
            if not len(dataset):
                raise GaitDataError(f"{root}: every sequence of {name} has errors, nothing is left\n{report}")
        report.arrays.clear()  # the datasets hold what they use
        ids = sorted(set(train_set.labels))
        if self.batch_p > len(ids):
            raise GaitDataError(
                f"data.batch_p={self.batch_p} exceeds the {len(ids)} training identities found under {root}"
            )
        keys = ("/".join(k) for k in zip(train_set.labels, train_set.types, train_set.views))
        self.train_sampler.require_frames(max(report.frames[k] for k in keys), f"under {root}")
        self.train_ids = ids
        self.train_classes = np.searchsorted(np.asarray(ids), np.asarray(train_set.labels))
        self.num_classes = len(ids)
        self.train_set, self.test_set = train_set, test_set
        self.test_meta = {
            "labels": test_set.labels,
            "types": test_set.types,
            "views": test_set.views,
            "probe_set": part.probe,
        }

    def _check(self, root: Path, part: Partition) -> Report:
        """Check the ids in use before training: raise on errors, or warn about the sequences ``skip`` drops."""
        report = check_dataset(root, part, self.modalities, ids=[*part.train, *part.test], keep=self.cache)
        hint = f"`gaitkd check-data {root}` shows the table"
        if report.pkls > report.sequences and self.modalities is None:
            hint += ("; sequence folders hold several pkls and data.modalities=null reads them all, the first (sorted) "
                     "as the silhouette input: select the silhouette pkl, e.g. data.modalities=[sils.pkl]")
        if self.on_error == "raise":
            report.raise_if_errors(f"data.on_error=raise; data.on_error=skip leaves out the broken sequences instead. "
                                   f"{hint}")
        elif any(issue.kind not in SEQUENCE_KINDS for issue in report.errors):
            report.raise_if_errors(f"data.on_error=skip only leaves out sequences; some errors are not confined to "
                                   f"one. {hint}")
        if report.warnings:
            found = ", ".join(f"{i.kind} x{i.count} (e.g. {i.examples[0][0]})" for i in report.warnings)
            warnings.warn(f"{root}: the dataset check found {found}", GaitDataWarning, stacklevel=3)
        if report.bad_sequences:
            kinds = Counter(kind for found in report.bad_sequences.values() for kind in set(found))
            warnings.warn(
                f"{root}: data.on_error=skip leaves out {len(report.bad_sequences)} of {report.sequences} sequences "
                f"with errors ({', '.join(f'{k}: {n}' for k, n in kinds.most_common())}; first: "
                f"{sorted(report.bad_sequences)[:5]})",
                GaitDataWarning,
                stacklevel=3,
            )
        return report

    def _require_setup(self) -> None:
        if self.train_set is None:
            raise RuntimeError("GaitDataModule.setup() must run before asking for dataloaders")

    # ----------------------------------------------------------------------------------------- resumable position
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: how many training batches the run has taken, so a resumed run continues with
        the very batch an uninterrupted run would take next (see :meth:`SeededBatches.resume_at`)."""
        if self._train_batches is None or self.trainer is None:
            return {}
        return {"train_batches_done": int(self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position of :meth:`state_dict`; applied to the training loader when it is built."""
        if "train_batches_done" in state_dict:
            self._resume_at = int(state_dict["train_batches_done"])

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        pk = PKBatchSampler(
            self.train_set.labels, self.batch_p, self.batch_k, seed=self.seed, steps_per_epoch=self.steps_per_epoch
        )
        self._train_batches = SeededBatches(pk, seed=self.seed)
        if self._resume_at is not None:  # a resumed run: the data go on where the checkpoint left them
            self._train_batches.resume_at(self._resume_at)
            self._resume_at = None
        return DataLoader(
            TrainFrames(self.train_set, self.train_classes, self.train_sampler),
            batch_sampler=self._train_batches,
            # its own generator: starting the loader does not draw from torch's global RNG, which a resumed run
            # restores (items are seeded by SeededBatches, so nothing depends on this generator)
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=TrainCollate(self.augment, packed=self.train_sampler.packed),
            **self.loader_kwargs,
        )

    def test_dataloader(self) -> DataLoader:
        self._require_setup()
        return DataLoader(
            EvalFrames(self.test_set, self.eval_frames_limit),
            batch_sampler=InferenceBatchSampler(len(self.test_set), self.eval_batch_size),
            collate_fn=collate_eval,
            **self.loader_kwargs,
        )
