"""The loggers' side of a run: the W&B logger (offline unless turned on, named after its Hydra job) and the
per-job session that gives every logger the resolved config and ends W&B's run when the job ends.

``wandb_logger`` is the ``_target_`` of ``conf/logger/wandb.yaml``; ``build_loggers`` builds the ``logger`` group.
``logger_session`` wraps one job's fit + test
(``gaitkd.run.train``): in a Hydra multirun, whose jobs share one process, each job gets a W&B run of its own,
finished also when the job fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from gaitkd.errors import ConfigError, GaitKDError

WANDB_MODES = ("online", "offline", "disabled")
WANDB_NAME_MAX = 128  # W&B display names and groups longer than this are cut


def _swept_overrides(job_overrides: list[str], sweep_dir: Path) -> list[str]:
    """The overrides of this job that its multirun was not given verbatim: the swept values (``seed=1`` of
    ``seed=0,1``, an Optuna trial's parameters). Hydra writes the multirun's own overrides to
    ``<sweep dir>/multirun.yaml`` before the first job; without that file, every override of the job."""
    launched = sweep_dir / "multirun.yaml"
    if not launched.is_file():
        return job_overrides
    given = set(OmegaConf.select(OmegaConf.load(launched), "hydra.overrides.task", default=[]))
    return [o for o in job_overrides if o not in given]


def hydra_job_identity(task_name: str) -> tuple[str, str]:
    """``(group, name)`` of this job for W&B.

    In a Hydra multirun the group is the sweep folder's last two parts (``<study or task>/<time>``: every job of one
    multirun, and nothing else, shares it) and the name is ``<job number>:<swept overrides>`` (e.g.
    ``3:distill=none,seed=1``); in a single run (or without Hydra, as in tests) both are ``task_name``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return task_name, task_name
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return task_name, task_name
    sweep = Path(hc.sweep.dir)
    swept = ",".join(_swept_overrides(list(hc.overrides.task), sweep))
    name = f"{hc.job.num}:{swept}" if swept else str(hc.job.num)
    return f"{sweep.parent.name}/{sweep.name}"[:WANDB_NAME_MAX], name[:WANDB_NAME_MAX]


def wandb_logger(
    task_name: str, mode: str = "offline", group: str | None = None, name: str | None = None, **kwargs: Any
) -> WandbLogger:
    """A ``WandbLogger`` whose run is created in W&B ``mode`` (``logger.wandb.mode``; the config takes
    ``$WANDB_MODE``, else ``offline``).

    ``group`` / ``name`` ``None`` means :func:`hydra_job_identity`. Other keyword arguments go to ``WandbLogger``
    and from there to ``wandb.init`` (``project``, ``save_dir``, ``tags``, ``entity``, ...). The mode goes to
    ``wandb.init`` itself: ``WandbLogger(offline=True)`` would set ``WANDB_MODE`` for the rest of the process.
    """
    if mode not in WANDB_MODES:
        raise ConfigError(
            f"logger.wandb.mode={mode!r} (set in the config or through WANDB_MODE): expected one of {WANDB_MODES}"
        )
    auto_group, auto_name = hydra_job_identity(task_name)
    return WandbLogger(mode=mode, group=group or auto_group, name=name or auto_name, **kwargs)


def build_loggers(group: DictConfig | None) -> list[Logger]:
    """The loggers of the ``logger`` config group (entries without ``_target_`` are off). Nothing starts here
    (W&B's run starts in :func:`logger_session`); a user error in a logger's config is raised as itself, not
    wrapped in Hydra's ``InstantiationException``."""
    try:
        return [instantiate(node) for node in (group or {}).values() if node and "_target_" in node]
    except InstantiationException as err:
        if isinstance(err.__cause__, GaitKDError):
            raise err.__cause__ from None
        raise


@contextmanager
def logger_session(loggers: Sequence[Logger], config: dict[str, Any]) -> Iterator[None]:
    """Log ``config`` (the run's resolved config) as every logger's hyper-parameters; on leaving, finish the W&B
    runs the loggers started (exit code 1 when the body raised), so that the next job starts a run of its own."""
    failed = True
    try:
        for logger in loggers:
            logger.log_hyperparams(config)
        yield
        failed = False
    finally:
        for logger in loggers:
            # ``_experiment`` is the run if one was started; ``.experiment`` would start one just to finish it
            run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
            if run is not None:
                run.finish(exit_code=1 if failed else 0)
