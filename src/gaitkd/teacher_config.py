"""The ``teacher`` group and the ``teachers`` mapping -> validated teacher configs, before any data is built.

A run's teachers are the ``teacher=`` group (when it names a model), called ``teacher``, plus every entry of the
``teachers`` mapping (see ``conf/experiment/two_teachers.yaml``)::

    teachers:
      <name>:
        model: {_target_: ..., ...}  # e.g. a conf/teacher option put there: `- /teacher@teachers.<name>: gaitpart`
        ckpt: PATH                   # required (gaitkd or OpenGait checkpoint)
        logit_scale: 16.0
        distill: {decision: null}    # optional: overrides of part_align / connector / decision / boundary
        weight: 1.0                  # optional: its factor under distill.combine=weighted

A teacher takes part only when its distill config has a KD term (and, under ``weighted``, its weight is not 0);
otherwise it is neither built nor run and needs no checkpoint (``distill=none`` baselines cost the plain student).
Every problem is one ``ConfigError`` naming the key (``teacher.ckpt``, ``teachers.<name>.<key>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from gaitkd.distill.branch import OutputShape
from gaitkd.errors import ConfigError
from gaitkd.teachers import COMBINE_MODES, SINGLE_TEACHER, TERMS, takes_part, term_on

TEACHER_KEYS = ("model", "ckpt", "logit_scale", "distill", "weight")
BRANCH_KEYS = ("part_align", "connector", "decision", "boundary")


@dataclass(frozen=True)
class TeacherConfig:
    """One validated, active teacher: ``key`` is its config path for messages (``teacher`` / ``teachers.<name>``)."""

    key: str
    model: DictConfig
    ckpt: Path
    logit_scale: float
    distill: dict[str, Any]
    weight: float


def _entries(cfg: DictConfig) -> dict[str, tuple[str, DictConfig]]:
    """name -> (config key, node) of every configured teacher, active or not."""
    entries: dict[str, tuple[str, DictConfig]] = {}
    group = cfg.get("teacher")
    if isinstance(group, DictConfig) and "model" in group:
        entries[SINGLE_TEACHER] = ("teacher", group)
    mapping = cfg.get("teachers")
    if mapping is None:
        return entries
    if not isinstance(mapping, DictConfig):
        raise ConfigError(f"teachers must be a mapping name -> {{{', '.join(TEACHER_KEYS)}}}, got {mapping!r}")
    for name, node in mapping.items():
        key = f"teachers.{name}"
        if name in entries:
            raise ConfigError(f"{key}: the name {SINGLE_TEACHER!r} is the teacher= group's; choose another name")
        if not str(name).isidentifier() or hasattr(nn.ModuleDict(), str(name)):
            raise ConfigError(f"{key}: a teacher name must be an identifier that is not a ModuleDict attribute")
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{key} must be a mapping with keys {', '.join(TEACHER_KEYS)}, got {node!r}")
        entries[str(name)] = (key, node)
    return entries


def _merged_distill(key: str, node: DictConfig, group: dict[str, Any]) -> dict[str, Any]:
    """The distill group with this teacher's ``distill`` overrides applied."""
    over = node.get("distill") or {}
    if not isinstance(over, DictConfig | dict):
        raise ConfigError(f"{key}.distill must be a mapping of overrides of {', '.join(BRANCH_KEYS)}, got {over!r}")
    unknown = sorted(set(over) - set(BRANCH_KEYS))
    if unknown:
        raise ConfigError(f"{key}.distill.{unknown[0]}: unknown key; a teacher's distill overrides only "
                          f"{', '.join(BRANCH_KEYS)} (distill.combine applies to all teachers)")
    merged = OmegaConf.to_container(OmegaConf.merge(group, over), resolve=True)
    for term in TERMS:
        value, where = merged.get(term), f"{key}.distill.{term}" if term in over else f"distill.{term}"
        if value is not None and (not isinstance(value, dict) or (term_on(merged, term) and "_target_" not in value)):
            raise ConfigError(f"{where}: expected a loss config with _target_ (e.g. the distill group's) or null, "
                              f"got {value!r}")
    return merged


def _weight(key: str, node: DictConfig, combine: str) -> float:
    raw = node.get("weight")
    if raw is None:
        return 1.0
    try:
        weight = float(raw)
    except (TypeError, ValueError):
        weight = -1.0
    if weight < 0.0:
        raise ConfigError(f"{key}.weight={raw}: expected a number >= 0")
    if combine != "weighted" and weight != 1.0:
        raise ConfigError(f"{key}.weight={raw} is only used with distill.combine=weighted (this run: "
                          f"distill.combine={combine}); set distill.combine=weighted or drop the weight")
    return weight


def _ckpt(key: str, node: DictConfig) -> Path:
    ckpt = None if OmegaConf.is_missing(node, "ckpt") else node.get("ckpt")
    what = "(a gaitkd checkpoint, e.g. outputs/train_gaitgl/<run>/checkpoints/last.ckpt, or an OpenGait .pt)"
    if not ckpt:
        raise ConfigError(f"this run distils from {key} but `{key}.ckpt` is not set: pass {key}.ckpt=PATH {what}")
    path = Path(str(ckpt))
    if not path.is_file():
        raise ConfigError(f"{key}.ckpt={ckpt}: no such file; pass {key}.ckpt=PATH of an existing checkpoint {what}")
    return path


def _teacher(key: str, node: DictConfig, group: dict[str, Any], combine: str) -> TeacherConfig | None:
    """Validate one entry; ``None`` when it contributes no KD term (then its checkpoint is not needed)."""
    unknown = sorted(set(node) - set(TEACHER_KEYS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key; a teacher takes {', '.join(TEACHER_KEYS)}")
    model = None if OmegaConf.is_missing(node, "model") else node.get("model")
    if not isinstance(model, DictConfig) or "_target_" not in model:
        raise ConfigError(f"{key}.model: expected a model config with _target_ (as in conf/teacher/*.yaml), "
                          f"got {model!r}")
    try:
        logit_scale = float(node.get("logit_scale", 1.0))
    except (TypeError, ValueError):
        logit_scale = 0.0
    if logit_scale <= 0.0:
        raise ConfigError(f"{key}.logit_scale={node.get('logit_scale')}: expected a number > 0")
    distill, weight = _merged_distill(key, node, group), _weight(key, node, combine)
    if not takes_part(distill, weight, combine):
        return None
    return TeacherConfig(key, model, _ckpt(key, node), logit_scale, distill, weight)


def teacher_configs(cfg: DictConfig) -> dict[str, TeacherConfig]:
    """The teachers that take part in this run (name -> config), validated; ``{}`` for a plain student run."""
    group = OmegaConf.to_container(cfg.get("distill") or OmegaConf.create({}), resolve=True)
    combine = group.pop("combine", "sum")
    if combine not in COMBINE_MODES:
        raise ConfigError(f"distill.combine={combine}: expected one of {', '.join(COMBINE_MODES)}")
    entries = _entries(cfg)
    if not entries and takes_part(group, 1.0, combine):
        raise ConfigError("distill is enabled but no teacher is configured: add `teacher=gaitgl teacher.ckpt=PATH` "
                          "(or a `teachers` mapping, see conf/experiment/two_teachers.yaml)")
    found = {name: _teacher(key, node, group, combine) for name, (key, node) in entries.items()}
    return {name: tc for name, tc in found.items() if tc is not None}


def check_teacher_shape(tc: TeacherConfig, shape: OutputShape, num_classes: int) -> None:
    """A built teacher must fit its KD terms: a classifier for decision KD, the dataset's class count."""
    if shape.classes is None and term_on(tc.distill, "decision"):
        fix = "distill.decision=null" if tc.key == SINGLE_TEACHER else f"{tc.key}.distill.decision: null"
        raise ConfigError(f"{tc.key}.model ({tc.model._target_}) has no classifier, so it cannot teach through "
                          f"decision-level KD: set {fix} (boundary branch only)")
    if shape.classes is not None and shape.classes != num_classes:
        raise ConfigError(f"{tc.key}.model.class_num: the teacher has {shape.classes} classes but the dataset has "
                          f"{num_classes} training identities; use a teacher trained on this dataset's training split")
