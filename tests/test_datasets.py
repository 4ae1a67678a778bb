"""Dataset configs: OpenGait's partition rules, and a Gait3D-layout folder trained and evaluated end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from gaitkd.data import GaitDataError
from gaitkd.data.partition import dataset_rule_partition
from gaitkd.run import CONF_DIR, train


def test_casia_b_and_oumvlp_rules():
    part = dataset_rule_partition("casia_b", [f"{i:03d}" for i in range(1, 125)])
    assert part.train[0] == "001" and part.train[-1] == "074" and part.test[0] == "075" and len(part.test) == 50
    ou = dataset_rule_partition("oumvlp", [f"{i:05d}" for i in (1, 2, 3, 10305, 10306, 10307)])
    assert ou.train == ["00001", "00003", "10305"] and ou.test == ["00002", "10306", "10307"]
    with pytest.raises(GaitDataError, match="Gait3D"):
        dataset_rule_partition("gait3d", ["0001"])
    with pytest.raises(GaitDataError, match="numeric"):
        dataset_rule_partition("casia_b", ["001", "abc"])


def write_gait3d(root: Path, rng: np.random.Generator) -> tuple[Path, list[str]]:
    """8 train ids, 6 test ids (2 sequences each, one of them the probe), 64x44 pkls as Gait3D's release."""
    ids = [f"{i:04d}" for i in range(14)]
    probes = []
    for n, pid in enumerate(ids):
        for s in range(2):
            folder = root / pid / f"camid{s}_videoid{n % 3}" / f"seq{s}"
            folder.mkdir(parents=True)
            frames = (rng.random((8, 64, 44)) * 255).astype(np.uint8)
            (folder / f"seq{s}.pkl").write_bytes(pickle.dumps(frames))
        if n >= 8:
            probes.append(f"{pid}-camid0_videoid{n % 3}-seq0")
    partition = root.parent / "Gait3D.json"
    partition.write_text(json.dumps({"TRAIN_SET": ids[:8], "TEST_SET": ids[8:], "PROBE_SET": probes}))
    return partition, probes


def test_gait3d_layout_trains_and_evaluates(tmp_path):
    partition, probes = write_gait3d(tmp_path / "Gait3D", np.random.default_rng(0))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[
            "data=gait3d", f"data.root={tmp_path / 'Gait3D'}", f"data.partition={partition}", "data.batch_p=2",
            "data.batch_k=2", "data.train_frames=4", "data.eval_frames_limit=4", "data.num_workers=0",
            "student=gaitset_small", "evaluation.protocol=gait3d", "evaluation.heatmap=false", "trainer.max_steps=1",
            "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "logger=none", "callbacks=none",
            f"paths.output_dir={tmp_path / 'out'}",
        ])
    metrics = train(cfg)
    for key in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert 0.0 <= metrics[key] <= 100.0
    assert len(probes) == 6


def test_oumvlp_layout_uses_the_rule_and_its_protocol(tmp_path):
    """OU-MVLP naming (<id>/<00|01>/<view>), no partition file: odd ids train, even ids test."""
    rng = np.random.default_rng(1)
    root = tmp_path / "OUMVLP"
    for i in range(1, 11):
        for seq in ("00", "01"):
            for view in ("000", "015", "030"):
                folder = root / f"{i:05d}" / seq / view
                folder.mkdir(parents=True)
                (folder / f"{view}.pkl").write_bytes(pickle.dumps((rng.random((6, 64, 64)) * 255).astype(np.uint8)))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[
            "data=oumvlp", f"data.root={root}", "data.batch_p=2", "data.batch_k=2", "data.train_frames=4",
            "data.num_workers=0", "student=gaitset_small", "evaluation.protocol=oumvlp", "evaluation.heatmap=false",
            "trainer.max_steps=1", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "logger=none",
            "callbacks=none", f"paths.output_dir={tmp_path / 'out'}",
        ])
    metrics = train(cfg)
    assert 0.0 <= metrics["NM@R1"] <= 100.0 and "BG@R1" not in metrics
