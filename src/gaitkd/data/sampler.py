"""Batch samplers: P×K identity batches for training, ordered per-rank chunks for evaluation.

DDP without communication: every rank builds the same global draw from ``(seed, epoch)`` and keeps its own part,
so no broadcast is needed (OpenGait broadcasts from rank 0). These samplers handle distribution themselves, so the
Lightning trainer must run with ``use_distributed_sampler=False`` under DDP.

Lightning's epoch hook calls ``set_epoch`` on ``dataloader.batch_sampler.sampler``; the samplers expose
``sampler`` as themselves so that hook reaches them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else ``torch.distributed``'s when initialised, else ``(0, 1)``."""
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
    return rank, world_size


class PKBatchSampler:
    """Yields batches of P identities × K sequences (lists of ``P*K`` dataset indices, identity-major).

    Each global step draws ``P * world_size`` distinct identities; rank ``r`` takes identities ``[r*P, (r+1)*P)``,
    so ranks see disjoint identities at the same step. The K sequences of an identity are drawn without
    replacement when it has at least K, else with replacement. Draws depend only on ``(seed, epoch)``
    (:meth:`set_epoch`), so every rank computes the same global batch.

    Args:
        labels: identity of every dataset item (``dataset.labels``).
        p, k: identities per rank-batch and sequences per identity.
        steps_per_epoch: batches per epoch (default ``max(1, len(labels) // (p * k))``).
    """

    def __init__(
        self,
        labels: Sequence[str],
        p: int,
        k: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"data.batch_p and data.batch_k must be >= 1, got P={p}, K={k}")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        ids, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
        needed = p * self.world_size
        if needed > len(ids):
            raise ValueError(
                f"data.batch_p={p} x world_size={self.world_size} = {needed} distinct identities per step, "
                f"but the training set has only {len(ids)} identities; lower data.batch_p"
            )
        # members[i, :counts[i]] = dataset indices of identity i; width >= k so K columns always exist.
        order = np.argsort(inverse, kind="stable")
        width = max(int(counts.max()), k)
        self._members = np.full((len(ids), width), -1, dtype=np.int64)
        rows = inverse[order]
        cols = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
        self._members[rows, cols] = order
        self._counts = counts
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1 or null, got {steps_per_epoch}")
        self.steps = steps_per_epoch or max(1, len(labels) // (p * k))

    @property
    def sampler(self) -> PKBatchSampler:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """One global step: ``[P * world_size, K]`` dataset indices."""
        n_ids, width = self._members.shape
        ids = rng.choice(n_ids, self.p * self.world_size, replace=False)
        counts = self._counts[ids][:, None]
        # Without replacement: the K smallest of random keys over each identity's valid columns.
        keys = rng.random((len(ids), width))
        keys[np.arange(width) >= counts] = 2.0
        without = np.argsort(keys, axis=1)[:, : self.k]
        with_repl = (rng.random((len(ids), self.k)) * counts).astype(np.int64)
        cols = np.where(counts >= self.k, without, with_repl)
        return self._members[ids[:, None], cols]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        lo = self.rank * self.p
        for _ in range(self.steps):
            yield self._draw(rng)[lo : lo + self.p].ravel().tolist()


class SeededBatches:
    """Wraps a batch sampler so each item becomes ``(index, seed)`` for per-item frame sampling.

    Seeds derive from ``(seed, epoch, rank, step, position)``, so frame draws are reproducible and independent of
    the number of DataLoader workers and of persistent workers (which never see epoch changes themselves).

    Resuming: :meth:`resume_at` ``(done)`` — the number of batches the run had taken in all — makes the stream go
    on with batch ``done``: epoch ``done // len``, leaving out its first ``done % len`` batches (still drawn, so the
    rest are exactly those of an uninterrupted run). The data epoch is then kept ahead of or behind the epoch
    Lightning passes to :meth:`set_epoch` by a fixed shift: Lightning starts a new epoch when resuming a checkpoint
    written after ``fit`` stopped mid-epoch, while the data go on where they were. ``len`` stays a full epoch
    (Lightning counts the batches already done of an epoch it resumes itself).
    """

    def __init__(self, batches: PKBatchSampler, seed: int = 0) -> None:
        self.batches, self.seed = batches, seed
        self._resume: int | None = None
        self._shift = self._skip = 0

    def resume_at(self, done: int) -> None:
        """Continue with the ``done``-th batch of the whole run (0-based); applied at the next epoch start."""
        self._resume = int(done)

    @property
    def sampler(self) -> SeededBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        if self._resume is not None:
            data_epoch, self._skip = divmod(self._resume, len(self.batches))
            self._shift, self._resume = data_epoch - epoch, None
        self.batches.set_epoch(epoch + self._shift)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self._resume is not None:  # resumed, but nobody called set_epoch: the data epoch decides
            self.set_epoch(getattr(self.batches, "epoch", 0))
        epoch, rank = getattr(self.batches, "epoch", 0), getattr(self.batches, "rank", 0)
        skip, self._skip = self._skip, 0
        for step, batch in enumerate(self.batches):
            if step < skip:
                continue
            seeds = np.random.SeedSequence([self.seed, epoch, rank, step]).generate_state(len(batch), np.uint64)
            yield list(zip(batch, seeds.tolist()))


class InferenceBatchSampler:
    """Sequential evaluation batches; under DDP each rank gets one contiguous chunk of the (padded) index list.

    The list is padded to a multiple of ``world_size`` by repeating its first items, so every rank runs the same
    number of batches; the evaluation collector de-duplicates by dataset index.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int | None = None, world_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be >= 1, got {batch_size}")
        if num_items < 1:
            raise ValueError("the evaluation set is empty")
        self.batch_size = batch_size
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        per_rank = -(-num_items // self.world_size)
        padded = np.resize(np.arange(num_items), per_rank * self.world_size)  # np.resize repeats from the start
        self.indices = padded[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start : start + self.batch_size]
