"""Train/test identity partitions: OpenGait's JSON files and a simple rule-based split.

OpenGait format: ``{"TRAIN_SET": [ids], "TEST_SET": [ids], "PROBE_SET": [...]}`` (``PROBE_SET`` only for Gait3D,
entries ``"<id>-<type>-<view>"``). Ids are folder names, hence strings (``"001"``, not ``1``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gaitkd.data.dataset import GaitDataError


@dataclass(frozen=True)
class Partition:
    """Identity split. ``probe`` lists Gait3D-style probe sequences (``None`` when the file has no ``PROBE_SET``)."""

    train: list[str]
    test: list[str]
    probe: list[str] | None = None


def _str_list(data: dict, key: str, path: Path) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GaitDataError(f'{path}: {key} must be a list of id strings (folder names such as "001")')
    return value


def load_partition(path: str | os.PathLike) -> Partition:
    """Read an OpenGait partition JSON; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise GaitDataError(f"partition file {path} not found; expected OpenGait JSON with TRAIN_SET and TEST_SET")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GaitDataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise GaitDataError(f"{path}: expected a JSON object with TRAIN_SET and TEST_SET, found {type(data).__name__}")
    for key in ("TRAIN_SET", "TEST_SET"):
        if key not in data:
            raise GaitDataError(f"{path}: missing key {key} (found keys {sorted(data)})")
    train = _str_list(data, "TRAIN_SET", path)
    test = _str_list(data, "TEST_SET", path)
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise GaitDataError(f"{path}: {len(overlap)} ids are in both TRAIN_SET and TEST_SET (first: {overlap[:5]})")
    probe = _str_list(data, "PROBE_SET", path) if "PROBE_SET" in data else None
    return Partition(train=train, test=test, probe=probe)


def resolve_partition(root: Path, partition: str | os.PathLike | None, rule: str | None) -> Partition:
    """The partition a dataset root uses: ``partition`` (a JSON path) if given, else ``<root>/partition.json``, else
    the split ``rule`` (``casia_b`` / ``oumvlp``) over the id folders of ``root``; reads no pkl."""
    if partition is not None:
        return load_partition(partition)
    default = root / "partition.json"
    if not default.is_file() and rule is not None:
        return dataset_rule_partition(rule, (p.name for p in root.iterdir() if p.is_dir()))
    if not default.is_file():
        raise GaitDataError(
            f"no partition given and {default} does not exist; set data.partition to an OpenGait JSON "
            "with TRAIN_SET / TEST_SET (e.g. OpenGait's datasets/CASIA-B/CASIA-B.json)"
        )
    return load_partition(default)


def rule_partition(ids: Iterable[str], num_train: int) -> Partition:
    """First ``num_train`` sorted ids for training, the rest for testing (CASIA-B's 74/50 rule)."""
    ordered = sorted(set(ids))
    if not 0 < num_train < len(ordered):
        raise GaitDataError(f"num_train={num_train} must be in [1, {len(ordered) - 1}] for {len(ordered)} ids")
    return Partition(train=ordered[:num_train], test=ordered[num_train:])


def _casia_b_train(pid: str) -> bool:
    return int(pid) <= 74  # OpenGait's CASIA-B.json: 001-074 train, 075-124 test


def _oumvlp_train(pid: str) -> bool:
    return int(pid) % 2 == 1 and int(pid) <= 10305  # OUMVLP.json: odd ids up to 10305 train, the rest test


PARTITION_RULES = {"casia_b": _casia_b_train, "oumvlp": _oumvlp_train}


def dataset_rule_partition(rule: str, ids: Iterable[str]) -> Partition:
    """OpenGait's published split as a rule over the ids on disk (``casia_b`` or ``oumvlp``)."""
    if rule not in PARTITION_RULES:
        raise GaitDataError(f"unknown partition rule {rule!r}; known: {sorted(PARTITION_RULES)} (Gait3D needs its "
                            "partition JSON with PROBE_SET: set data.partition)")
    ordered = sorted(set(ids))
    bad = [pid for pid in ordered if not pid.isdigit()]
    if bad:
        raise GaitDataError(f"partition rule {rule!r} needs numeric ids, found {bad[:5]}")
    is_train = PARTITION_RULES[rule]
    part = Partition(train=[p for p in ordered if is_train(p)], test=[p for p in ordered if not is_train(p)])
    if not part.train or not part.test:
        raise GaitDataError(f"partition rule {rule!r} gives {len(part.train)} train / {len(part.test)} test ids")
    return part
