"""Multi-process runs (``trainer=ddp`` / ``ddp_cpu`` / ``slurm``): what is rank-aware where, and one launch check.

* Data: :mod:`gaitkd.data.sampler` splits batches across ranks itself (``use_distributed_sampler: false`` in every
  trainer config): each step's P×K identities are distinct across ranks; evaluation chunks are padded to equal size.
* Evaluation: :class:`gaitkd.evaluation.EmbeddingCollector` all-gathers and de-duplicates the padding, so every rank
  computes the same protocol result; only global rank 0 writes files (results, checkpoints, ``metrics.json``).
* Non-finite losses: :class:`gaitkd.numerics.NonFiniteGuard` all-reduces its check, so all ranks skip together.
* Launch: with ``trainer=ddp`` Lightning starts ranks 1.. by re-running this process's command line; under SLURM
  (``srun``) every rank is started by SLURM.
"""

from __future__ import annotations

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from gaitkd.errors import ConfigError


def check_launch(trainer: L.Trainer) -> None:
    """Refuse a Hydra multirun whose jobs would start DDP processes themselves.

    Lightning's launcher re-runs the command line, ``-m`` included, so each rank would start the whole sweep.
    """
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if environment is None or trainer.num_devices * trainer.num_nodes == 1:
        return
    if environment.creates_processes_externally or not HydraConfig.initialized():
        return
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            "a multirun (-m) cannot start DDP processes itself (each rank would re-run the whole sweep); sweep with "
            "one process per job, or on a cluster with hydra/launcher=slurm trainer=slurm (README: Scaling out)"
        )
