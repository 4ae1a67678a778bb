"""Hydra entry point: compose -> validate -> build -> fit -> test.

    python -m gaitkd.run +experiment=gaitgl_to_gaitset data=synthetic teacher.ckpt=PATH

``train(cfg)`` is the task function (tests call it in-process); ``main`` wraps it for the command line and
turns known user errors (bad data root, missing teacher checkpoint, ...) into one clear message.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gaitkd.data import GaitDataError
from gaitkd.distill.branch import probe_shape
from gaitkd.distributed import check_launch
from gaitkd.errors import ConfigError, GaitKDError
from gaitkd.loggers import build_loggers, logger_session
from gaitkd.models import count_params, load_opengait_weights
from gaitkd.module import GaitKDModule
from gaitkd.resume import resolve_ckpt_path
from gaitkd.teacher_config import TeacherConfig, check_teacher_shape, teacher_configs
from gaitkd.teachers import Teacher
from gaitkd.validate import validate_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
OmegaConf.register_new_resolver("gaitkd_root", lambda: str(REPO_ROOT), replace=True)


def _optional(node: DictConfig | None) -> Any:
    """Instantiate a node of a group that may be switched off (``scheduler=none``, ``callbacks=none``): a node
    without ``_target_`` (e.g. values a preset sets for a group that is now off) means ``None``."""
    return instantiate(node) if node and "_target_" in node else None


def _model_config(node: DictConfig, num_classes: int) -> dict[str, Any]:
    """A model config as a plain dict; ``class_num: null`` means "the number of training identities"."""
    config = OmegaConf.to_container(node, resolve=True)
    if "class_num" in config and config["class_num"] is None:
        config["class_num"] = num_classes
    return config


def build_model(node: DictConfig, num_classes: int) -> nn.Module:
    """Instantiate a model config (see ``_model_config``)."""
    return instantiate(_model_config(node, num_classes))


def load_weights(model: nn.Module, path: str | Path, key: str, num_classes: int) -> None:
    """Load a checkpoint (config key ``key``) into ``model``; any mismatch is one ``ConfigError``."""
    try:
        load_opengait_weights(model, path)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(
            f"{key}={path} does not fit the configured model, built for this dataset's {num_classes} training "
            f"identities (class count). A checkpoint trained on another label set or with another architecture/width "
            f"cannot be used; check the model config and the dataset. Details: {err}"
        ) from err


def build_teacher(tc: TeacherConfig, num_classes: int) -> Teacher:
    """Build a configured teacher, load its checkpoint and check that it can teach this run (``ConfigError``)."""
    model = build_model(tc.model, num_classes)
    load_weights(model, tc.ckpt, f"{tc.key}.ckpt", num_classes)
    check_teacher_shape(tc, probe_shape(model), num_classes)
    return Teacher(model, tc.distill, tc.logit_scale, tc.weight)


@dataclass
class Built:
    """Everything one run needs, built from the config (tests use this to drive the Trainer themselves)."""

    datamodule: L.LightningDataModule
    module: GaitKDModule
    trainer: L.Trainer


def build(cfg: DictConfig) -> Built:
    """Validate the config, then build data, models, the LightningModule and the Trainer."""
    validate_config(cfg)  # cheap checks, before any data is generated or decoded
    L.seed_everything(cfg.seed, workers=True)  # data draws and model initialisation depend on the seed only
    teacher_cfgs = teacher_configs(cfg)  # validated before any data is built; {} when no KD term is on
    loggers = build_loggers(cfg.get("logger"))  # likewise (nothing starts before train's logger_session)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    num_classes = datamodule.num_classes
    teachers = {name: build_teacher(tc, num_classes) for name, tc in teacher_cfgs.items()}
    module = build_module(cfg, num_classes, teachers)
    trainer = build_trainer(cfg, loggers)
    check_launch(trainer)
    return Built(datamodule, module, trainer)


def build_module(cfg: DictConfig, num_classes: int, teachers: dict[str, Teacher]) -> GaitKDModule:
    """The LightningModule of a config: the student (``student.init`` weights loaded) and the built teachers."""
    student_config = _model_config(cfg.student.model, num_classes)
    student = instantiate(student_config)
    if cfg.student.get("init"):
        load_weights(student, cfg.student.init, "student.init", num_classes)
    return GaitKDModule(
        student=student,
        num_classes=num_classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=_optional(cfg.get("scheduler")),
        teachers=teachers,
        combine=str(cfg.distill.get("combine", "sum")),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        student_head={k: cfg.student.get(k) for k in ("aux_classifier", "logit_scale", "label_smooth")},
        evaluation=OmegaConf.to_container(cfg.evaluation, resolve=True),
        output_dir=str(cfg.paths.output_dir),
        student_config=student_config,
        perf=OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") else None,
    )


def build_trainer(cfg: DictConfig, loggers: list, extra_callbacks: tuple = ()) -> L.Trainer:
    """The configured Trainer with the configured callbacks (plus ``extra_callbacks``) and ``loggers``."""
    callbacks = [x for x in map(_optional, (cfg.get("callbacks") or {}).values()) if x is not None]
    # logger=none with the default callbacks: the learning-rate monitor would stop the run (it needs a logger)
    callbacks = [c for c in callbacks if loggers or not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=[*callbacks, *extra_callbacks])


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and test) one configuration; returns the metrics also written to ``<output_dir>/metrics.json``."""
    resume_from = resolve_ckpt_path(cfg.get("ckpt_path"), str(cfg.get("resume", "auto")), cfg.paths.output_dir)
    built = build(cfg)
    module, trainer = built.module, built.trainer
    out_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {"task": cfg.task_name, "student": type(module.student).__name__,
                               "params": count_params(module.student), "seed": cfg.seed}
    # one W&B run per job (a multirun's jobs share this process), given the resolved config, finished also on error
    with logger_session(trainer.loggers, OmegaConf.to_container(cfg, resolve=True)):
        if cfg.train:
            start = time.perf_counter()
            if resume_from:
                rank_zero_info(f"resuming from {resume_from}")
                metrics["resumed_from"] = resume_from
            trainer.fit(module, datamodule=built.datamodule, ckpt_path=resume_from)
            metrics["train_seconds"] = time.perf_counter() - start
            trainer.save_checkpoint(out_dir / "checkpoints" / "last.ckpt", weights_only=False)
        if cfg.test:
            trainer.test(module, datamodule=built.datamodule, verbose=False)
            metrics.update({k: v for k, v in module.result.items() if isinstance(v, float)})
            metrics["infer_ms_per_seq"] = module.infer_ms_per_seq
    if trainer.is_global_zero:  # under DDP every rank has the same metrics; one writes them
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def objective(cfg: DictConfig, metrics: dict[str, Any]) -> float | dict[str, Any]:
    """What ``main`` returns: the ``optimized_metric`` for a hyper-parameter sweeper (Optuna), else all metrics."""
    name = cfg.get("optimized_metric")
    if not name:
        return metrics
    if not isinstance(metrics.get(name), float):
        found = sorted(k for k, v in metrics.items() if isinstance(v, float))
        raise ConfigError(f"optimized_metric={name} is not a result of this run (test=true needed); found {found}")
    return metrics[name]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def main(cfg: DictConfig) -> float | dict[str, Any]:
    try:
        return objective(cfg, train(cfg))
    except (GaitKDError, GaitDataError) as err:  # user errors: config, data, a run that diverged
        print(f"gaitkd: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
