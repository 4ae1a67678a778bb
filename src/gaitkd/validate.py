"""The resolved config, checked before any data or model is built: one error naming the key and the fix.

``validate_config`` runs first in ``run.build``. It only reads the config, lists folder names, reads the partition
JSON and looks for the teacher checkpoint files: no pkl is decoded, no synthetic data generated, no model built.
Config problems are a :class:`ConfigError`, problems of the data on disk a :class:`GaitDataError`.

Checked here: the ``data`` node (unknown keys, the datamodule's own argument checks), teachers and ``distill``
(:func:`gaitkd.teacher_config.teacher_configs`: keys, weights, a missing ``teacher.ckpt``), the ``perf`` switches,
part alignment and connector names, a readable ``data.root``, the training identity count against ``data.batch_p``
(times the processes under DDP) and against a fixed ``class_num`` of the student or a teacher, and (synthetic data,
whose sequence lengths the config gives) ``data.train_frames`` against the longest sequence. Every ``part_align`` mode
maps both sides to ``min(P_t, P_s)`` parts, so only an unknown mode makes alignment impossible. The frame counts of
a real dataset are known once its pkls are decoded: the datamodule's data check compares them at setup, still
before training. Unknown group options (``student=gaitsett``) never get here: Hydra refuses them while composing,
naming the group and listing its options.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from gaitkd.data.datamodule import GaitDataModule
from gaitkd.data.dataset import LAYOUT, GaitDataError
from gaitkd.data.partition import load_partition, resolve_partition
from gaitkd.distill.align import ALIGN_MODES
from gaitkd.errors import ConfigError
from gaitkd.perf import Perf
from gaitkd.teacher_config import TeacherConfig, teacher_configs

CONNECTORS = ("student", "teacher")
_DATA_KEYS = tuple(inspect.signature(GaitDataModule).parameters)


@dataclass(frozen=True)
class TrainIds:
    """How many training identities the run will have, and where they come from (for messages)."""

    count: int
    where: str


def validate_config(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` / :class:`GaitDataError` for the first problem found; cheap checks only."""
    Perf.from_config(OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") else None)
    teachers = teacher_configs(cfg)
    for tc in teachers.values():
        _check_branch(cfg, tc)
    datamodule = _datamodule(cfg.data)
    if datamodule is None:  # another datamodule: its own setup checks its data
        return
    ids = _train_ids(datamodule)
    _check_batch(datamodule.batch_p, ids, world_size(cfg.get("trainer")))
    _check_class_num("student", cfg.student.get("model"), ids)
    for tc in teachers.values():
        _check_class_num(tc.key, tc.model, ids)
    if datamodule.synthetic is not None:
        longest = _synthetic(datamodule)["frames"][1]
        datamodule.train_sampler.require_frames(longest, "of the synthetic dataset (data.synthetic.frames)")


def _check_branch(cfg: DictConfig, tc: TeacherConfig) -> None:
    """A teacher's ``part_align`` and ``connector`` (the ``distill`` group's, or the teacher's own override)."""
    for name, allowed in (("part_align", ALIGN_MODES), ("connector", CONNECTORS)):
        value = tc.distill.get(name)
        if value is not None and value not in allowed:
            own = OmegaConf.select(cfg, f"{tc.key}.distill.{name}") is not None
            key = f"{tc.key}.distill.{name}" if own else f"distill.{name}"
            raise ConfigError(f"{key}={value} is not a {name.replace('_', ' ')} mode: set {key} to one of "
                              f"{', '.join(allowed)}")


def _datamodule(node: DictConfig) -> GaitDataModule | None:
    """The configured :class:`GaitDataModule` (its constructor does no I/O), or ``None`` for another target."""
    args = OmegaConf.to_container(node, resolve=True)
    target = args.pop("_target_", None)
    if target is None or get_class(target) is not GaitDataModule:
        return None
    unknown = sorted(set(args) - set(_DATA_KEYS))
    if unknown:
        raise ConfigError(f"data.{unknown[0]} is not a GaitDataModule argument: remove it or fix its spelling "
                          "(conf/data/casia_b.yaml lists every key)")
    try:
        return GaitDataModule(**args)
    except GaitDataError:
        raise
    except (TypeError, ValueError) as err:  # the argument checks name their data.* key
        raise ConfigError(str(err)) from err


def _synthetic(dm: GaitDataModule) -> dict:
    """The synthetic dataset's generation parameters (validated, canonical); nothing is generated."""
    from gaitkd.data.synthetic import generation_params  # the generator module only for synthetic data

    try:
        return generation_params(**dm.synthetic)[0]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.synthetic: {err}; its keys are gaitkd.data.synthetic.generate's parameters") from err


def _train_ids(dm: GaitDataModule) -> TrainIds:
    """Training identity count from the config (synthetic data) or the partition and the id folders on disk."""
    if dm.synthetic is not None and dm.partition is None:
        return TrainIds(_synthetic(dm)["num_train"], "the synthetic dataset (data.synthetic.num_train)")
    if dm.partition is not None and not Path(dm.partition).is_file():
        raise GaitDataError(f"data.partition={dm.partition} is not a file: point data.partition at an OpenGait "
                            "partition JSON with TRAIN_SET / TEST_SET, or set it to null to use <root>/partition.json")
    if dm.synthetic is not None:  # generated later: the partition alone counts
        return TrainIds(len(set(load_partition(dm.partition).train)), f"data.partition={dm.partition}")
    root, on_disk = _readable_root(dm.root)
    train = set(resolve_partition(root, dm.partition, dm.partition_rule).train) & on_disk
    if not train:
        raise GaitDataError(f"data.root={root} has no folder of a TRAIN_SET id: check data.root and data.partition "
                            "(ids are folder names such as 001)")
    return TrainIds(len(train), f"data.root={root}")


def _readable_root(root: str | None) -> tuple[Path, set[str]]:
    """``data.root`` as a listable folder, with the names of its sub-folders (the ids on disk)."""
    fix = f"point data.root at an OpenGait pkl folder laid out as {LAYOUT}, or use data=synthetic (embedded data)"
    if root is None:
        raise GaitDataError(f"data.root is not set: {fix}")
    path = Path(root)
    if not path.exists():
        raise GaitDataError(f"data.root={root} does not exist: {fix}")
    if not path.is_dir():
        raise GaitDataError(f"data.root={root} is a file, not a folder: {fix}")
    try:
        with os.scandir(path) as entries:
            return path, {e.name for e in entries if e.is_dir()}
    except OSError as err:
        raise GaitDataError(f"data.root={root} cannot be listed ({type(err).__name__}): give this user read and "
                            "execute permission on it (chmod -R u+rX) or point data.root at a readable copy") from err


def world_size(trainer: DictConfig | None) -> int:
    """Training processes the trainer config asks for (``devices`` x ``num_nodes``); 1 when ``devices`` is left to
    Lightning (``auto``, ``-1``): the batch sampler checks the real count once the processes run."""
    if trainer is None or "single" in str(trainer.get("strategy", "auto")):
        return 1
    devices = trainer.get("devices", 1)
    if isinstance(devices, ListConfig | list):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    else:
        count = int(devices) if str(devices).isdigit() else 1
    return max(count, 1) * int(trainer.get("num_nodes", 1) or 1)


def _check_batch(batch_p: int, ids: TrainIds, world: int) -> None:
    """Each step draws ``batch_p`` distinct identities per process (see :class:`gaitkd.data.PKBatchSampler`)."""
    if batch_p * world <= ids.count:
        return
    if world == 1:
        raise GaitDataError(f"data.batch_p={batch_p} exceeds the {ids.count} training identities of {ids.where}: "
                            f"lower data.batch_p to at most {ids.count}")
    fix = (f"lower data.batch_p to at most {ids.count // world}" if ids.count >= world
           else "use fewer processes (trainer.devices, trainer.num_nodes)")
    raise GaitDataError(f"data.batch_p={batch_p} x {world} processes (trainer.devices x trainer.num_nodes) needs "
                        f"{batch_p * world} distinct identities per step but {ids.where} has {ids.count} training "
                        f"identities: {fix}")


def _check_class_num(key: str, model: DictConfig | None, ids: TrainIds) -> None:
    """A model config's fixed ``class_num`` must be the training identity count (``null`` sets it so)."""
    classes = model.get("class_num") if isinstance(model, DictConfig) else None
    if classes is None or classes == ids.count:
        return
    fix = ("set student.model.class_num=null (the training identity count)" if key == "student"
           else f"set {key}.model.class_num=null and use a teacher checkpoint trained on this dataset's training split")
    raise ConfigError(f"{key}.model.class_num={classes} but {ids.where} has {ids.count} training identities: {fix}")
