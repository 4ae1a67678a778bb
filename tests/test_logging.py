"""Loggers and published results: W&B offline runs, CSV / TensorBoard, the heat-map and CMC PNGs.

No test makes a network call: W&B runs are offline (or disabled), with every W&B folder inside ``tmp_path``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from matplotlib.image import imread
from omegaconf import open_dict

from conftest import make_cfg
from gaitkd.errors import ConfigError
from gaitkd.evaluation import evaluate
from gaitkd.evaluation.report import cmc_curves, plot_cmc
from gaitkd.loggers import hydra_job_identity, logger_session, wandb_logger
from gaitkd.publish import accuracy_table, publish
from gaitkd.run import CONF_DIR, build, train

PNG_MAGIC = b"\x89PNG"


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> Path:
    """Offline W&B with its config / cache / data folders in ``tmp_path`` (nothing in ~, no network)."""
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    return home


def _compose_group(group: str, option: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("run", overrides=[f"{group}={option}"])[group]


def with_logger(cfg, option: str, lr_monitor: bool = False):
    """``cfg`` with ``logger=option`` (the tiny preset sets ``logger: null`` after any group override) and, if asked,
    the default callbacks' learning-rate monitor."""
    with open_dict(cfg):
        cfg.logger = _compose_group("logger", option)
        if lr_monitor:
            cfg.callbacks = {"lr_monitor": _compose_group("callbacks", "default").lr_monitor}
    return cfg


def _indoor_result(cmc_ranks: int) -> dict:
    """A CASIA-B-named evaluation of random embeddings: 5 ids, gallery nm-01..04, probes nm-05 / bg-01 / cl-01."""
    types = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "bg-01", "cl-01"]
    grid = [(f"{i:03d}", t, v) for i in range(5) for t in types for v in ("000", "090", "180")]
    labels, typs, views = (list(c) for c in zip(*grid))
    emb = torch.randn(len(grid), 8, 2, generator=torch.Generator().manual_seed(0))
    return evaluate("casia_b", emb, labels, typs, views, cmc_ranks=cmc_ranks)


def _offline_run(root: Path) -> dict:
    """What the one offline W&B run under ``root/wandb`` holds, read from its ``run-<id>.wandb`` file (offline,
    wandb 0.31 writes neither ``files/wandb-summary.json`` nor ``files/config.yaml``): ``summary`` (the last value of
    each key, media as their JSON descriptors), ``config``, ``group``, ``name``, ``exit_code`` and ``files``."""
    from wandb.proto.wandb_internal_pb2 import Record

    runs = sorted((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline W&B run under {root / 'wandb'}, found {runs}"
    (log,) = runs[0].glob("run-*.wandb")
    # W&B's LevelDB-style log: a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header
    # (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last); a block's tail under 7 bytes is padding.
    data, pos, block, chunks, records = log.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B", f"{log} is not a W&B transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            records.append(Record.FromString(chunks))
            chunks = b""
    run: dict = {"summary": {}, "config": {}, "files": runs[0] / "files"}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                *parents, leaf = [item.key] if item.key else list(item.nested_key)
                node = run["summary"]
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = json.loads(item.value_json)
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            run["group"], run["name"] = record.run.run_group, record.run.display_name
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def _tensorboard_values(folder: Path) -> dict:
    """``{tag: summary value}`` of every TensorBoard event file under ``folder`` (TFRecord framing, read by hand)."""
    from tensorboardX.proto.event_pb2 import Event

    values = {}
    for path in folder.rglob("events.out.tfevents.*"):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])  # u64 length, u32 crc, data, u32 crc
            pos += 12 + length + 4
            values.update({v.tag: v for v in event.summary.value})
    return values


# --------------------------------------------------------------------------------------------- end to end (tiny)
def test_wandb_offline_run_holds_losses_lr_metrics_table_and_images(tmp_path, cache_dir, wandb_env):
    cfg = with_logger(make_cfg(tmp_path, cache_dir, "evaluation.heatmap=true"), "wandb", lr_monitor=True)
    metrics = train(cfg)
    run = _offline_run(tmp_path)
    summary = run["summary"]

    assert {"train/loss", "train/triplet", "train/ce"} <= set(summary), sorted(summary)
    assert any(k.startswith("lr-") for k in summary), "learning rate not logged"
    for cond in ("NM", "BG", "CL"):
        assert summary[f"test/{cond}@R1"] == pytest.approx(metrics[f"{cond}@R1"])
    table = summary["test/per_view"]
    assert table["_type"] == "table-file"
    content = json.loads((run["files"] / table["path"]).read_text())
    assert content["columns"] == ["condition", "000", "090", "180", "mean"]
    assert [row[0] for row in content["data"]] == ["NM", "BG", "CL"]
    assert [row[-1] for row in content["data"]] == pytest.approx([metrics[f"{c}@R1"] for c in ("NM", "BG", "CL")])
    for key in ("test/per_view_heatmap", "test/cmc"):
        assert summary[key]["_type"] == "image-file"
        assert (run["files"] / summary[key]["path"]).read_bytes().startswith(PNG_MAGIC)
    assert run["config"]["evaluation"]["cmc_ranks"] == cfg.evaluation.cmc_ranks  # the resolved run config
    assert run["config"]["paths"]["output_dir"] == str(tmp_path)
    assert (run["group"], run["name"], run["exit_code"]) == (cfg.task_name, cfg.task_name, 0)
    import wandb

    assert wandb.run is None, "the job's W&B run was left open"


def test_csv_run_writes_cmc_and_heatmap_pngs(tmp_path, cache_dir):
    cfg = with_logger(make_cfg(tmp_path, cache_dir, "evaluation.heatmap=true"), "csv", lr_monitor=True)
    metrics = train(cfg)
    for name in ("per_view_heatmap.png", "cmc.png"):
        image = imread(tmp_path / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name
    columns = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/triplet", "test/NM@R1"} <= set(columns)
    assert any(c.startswith("lr-") for c in columns)
    test_metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert test_metrics["NM@R1"] == pytest.approx(metrics["NM@R1"])
    per_view = json.loads((tmp_path / "per_view.json").read_text())  # the heat-map's numbers, per condition
    assert set(per_view["rows"]) == {"NM", "BG", "CL"} and all(len(v) == len(per_view["views"])
                                                               for v in per_view["rows"].values())
    assert "cmc_ranks: 20" in (tmp_path / "csv" / "hparams.yaml").read_text()  # the resolved run config


def test_logger_many_builds_csv_tensorboard_and_wandb(tmp_path, cache_dir, wandb_env):
    cfg = with_logger(make_cfg(tmp_path, cache_dir), "many")
    built = build(cfg)
    assert {type(lg) for lg in built.trainer.loggers} == {CSVLogger, TensorBoardLogger, WandbLogger}
    wandb_lg = next(lg for lg in built.trainer.loggers if isinstance(lg, WandbLogger))
    init = wandb_lg._wandb_init  # what wandb.init will get: nothing was started yet
    assert (init["mode"], init["group"], init["name"]) == ("offline", cfg.task_name, cfg.task_name)


def test_no_logger_drops_the_lr_monitor(tmp_path, cache_dir):
    cfg = make_cfg(tmp_path, cache_dir)
    with open_dict(cfg):
        cfg.callbacks = {"lr_monitor": _compose_group("callbacks", "default").lr_monitor}
    built = build(cfg)
    assert not built.trainer.loggers
    assert not [c for c in built.trainer.callbacks if isinstance(c, LearningRateMonitor)]


# -------------------------------------------------------------------------------------------------------- units
def test_publish_to_csv_and_tensorboard(tmp_path):
    result = _indoor_result(cmc_ranks=6)
    tb = TensorBoardLogger(tmp_path, name="tb", version="")
    images = publish(result, tmp_path / "out", [CSVLogger(tmp_path), tb], step=2, extra={"num_sequences": 7},
                     heatmap=True, cmc_ranks=6)
    assert set(images) == {"per_view_heatmap", "cmc"} and all(p.parent == tmp_path / "out" for p in images.values())
    stored = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert stored == {**{k: v for k, v in result.items() if isinstance(v, float)}, "num_sequences": 7}
    tb.finalize("success")
    values = _tensorboard_values(tmp_path / "tb")
    for key, path in images.items():
        encoded = values[f"test/{key}"].image
        assert encoded.encoded_image_string.startswith(PNG_MAGIC)
        assert (encoded.height, encoded.width) == imread(path).shape[:2]
    table = values["test/per_view/text_summary"].tensor.string_val[0].decode()
    assert table.splitlines()[0] == "| condition | 000 | 090 | 180 | mean |" and "| NM |" in table


def test_publish_without_output_dir_or_media_logger_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert publish(_indoor_result(cmc_ranks=4), None, [], cmc_ranks=4) == {}
    assert not list(tmp_path.iterdir())


def test_accuracy_table_rows_and_nan(tmp_path):
    result = _indoor_result(cmc_ranks=0)
    result["per_view"][1, 0] = np.nan
    columns, rows = accuracy_table(result)
    assert columns == ["condition", "000", "090", "180", "mean"]
    assert [r[0] for r in rows] == ["NM", "BG", "CL"] and rows[1][1] is None
    assert rows[0][1:-1] == pytest.approx(list(result["per_view"][0]))
    assert accuracy_table({"Rank-1": 0.5, "cmc": np.ones(3)}) is None  # Gait3D: no per-view rows


def test_cmc_curves_indoor_percent_and_gait3d_fractions(tmp_path):
    result = _indoor_result(cmc_ranks=5)
    curves = cmc_curves(result)
    assert list(curves) == ["NM", "BG", "CL"] and all(len(c) == 5 for c in curves.values())
    gait3d = {"Rank-1": 0.25, "cmc": np.array([0.25, 0.5, 1.0], dtype=np.float32)}
    assert cmc_curves(gait3d)["all"] == pytest.approx([25.0, 50.0, 100.0])
    assert imread(plot_cmc(gait3d, tmp_path / "g3d.png", max_rank=2)).ndim == 3
    with pytest.raises(ValueError, match="cmc_ranks"):
        cmc_curves({"NM@R1": 1.0})


def test_wandb_mode_comes_from_the_config_or_wandb_mode(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert _compose_group("logger", "wandb").wandb.mode == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert _compose_group("logger", "wandb").wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "upload")
    with pytest.raises(ConfigError, match=r"logger\.wandb\.mode='upload'.*WANDB_MODE.*offline"):
        build(with_logger(make_cfg(tmp_path, cache_dir), "wandb"))  # the error itself, before any data is built
    assert not (tmp_path / "wandb").exists()


def test_session_finishes_each_jobs_run_also_on_error(tmp_path, wandb_env):
    import wandb

    ids = []
    for job in range(2):
        logger = wandb_logger(task_name="t", mode="offline", save_dir=str(tmp_path / str(job)))
        with pytest.raises(RuntimeError, match="job failed"), logger_session([logger], {"seed": job}):
            ids.append(logger.experiment.id)
            assert dict(logger.experiment.config) == {"seed": job}
            raise RuntimeError("job failed")
        assert wandb.run is None
    assert ids[0] != ids[1], "the second job reused the first job's W&B run"


def test_multirun_job_identity_is_sweep_group_and_swept_overrides(tmp_path):
    """Group = the sweep folder, name = job number + what was swept (Hydra's multirun.yaml holds what was given)."""
    sweep = tmp_path / "multirun" / "branches" / "2026-12-01_10-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [data=synthetic, 'distill=gaitkd,none', "
                                         "'seed=0,1']\n")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", return_hydra_config=True, overrides=[
            "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep}", "hydra.job.num=3",
            "data=synthetic", "distill=none", "seed=1",
        ])
    assert hydra_job_identity("train") == ("train", "train")  # no Hydra run: task_name
    HydraConfig.instance().set_config(cfg)
    try:
        assert hydra_job_identity("train") == ("branches/2026-12-01_10-00-00", "3:distill=none,seed=1")
        (sweep / "multirun.yaml").unlink()  # not written (another launcher): every override of the job
        assert hydra_job_identity("train")[1] == "3:data=synthetic,distill=none,seed=1"
    finally:
        HydraConfig.instance().cfg = None
