"""DDP: the trainer configs, and real 2-process runs (gloo) through the command line, as a user starts them.

The ``distributed`` tests each start ``python -m gaitkd.run trainer=ddp_cpu`` (Lightning re-runs it for rank 1);
a run that hangs (ranks that disagree wait in a collective forever) is killed and fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy

from conftest import REPO, kd_overrides, make_cfg
from gaitkd.run import CONF_DIR, build, train

# 4 training ids (P=2 per rank x 2 ranks), 3 test ids x 9 types x 3 views = 81 test sequences: odd, so the
# 2-process evaluation pads one sequence that the collector must drop
DATA = ["data.synthetic.num_ids=7", "data.synthetic.num_train=4",
        "+data.synthetic.types=[nm-01,nm-02,nm-03,nm-04,nm-05,nm-06,bg-01,bg-02,cl-01]"]
NUM_TEST = 81
TIMEOUT = 300
distributed = pytest.mark.distributed


def run_cli(out: Path, cache: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """``python -m gaitkd.run`` with ``make_cfg``'s overrides; the whole process group is killed on a hang."""
    student = [] if any(o.startswith("student=") for o in overrides) else ["student=gaitset_small"]
    out_dir = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
    cmd = [sys.executable, "-m", "gaitkd.run", *(["-m"] if multirun else []), "data=synthetic",
           f"paths.cache_dir={cache}", *student, *overrides, "+preset=tiny", out_dir]
    path = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": path}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {TIMEOUT} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def record(out: Path) -> list[str]:
    return ["+callbacks.record._target_=ddp_helpers.RecordBatches", f"+callbacks.record.out={out}"]


def seen(out: Path) -> list[dict]:
    return [json.loads((out / f"batches.rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_teacher(tmp_path_factory, cache_dir) -> Path:
    """A tiny GaitGL trained in one process on the 4-training-id data (a teacher, or weights to evaluate)."""
    out = tmp_path_factory.mktemp("ddp_teacher")
    train(make_cfg(out, cache_dir, "+experiment=train_gaitgl", "student=gaitgl_narrow", "test=false", *DATA))
    return out / "checkpoints" / "last.ckpt"


# ------------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", ["default", "cpu", "ddp", "ddp_cpu", "slurm"])
def test_trainer_configs_leave_the_split_to_gaitkd_samplers(name, tmp_path, cache_dir) -> None:
    cfg = make_cfg(tmp_path, cache_dir, f"trainer={name}")
    assert cfg.trainer.use_distributed_sampler is False and cfg.trainer.sync_batchnorm is False


def test_ddp_cpu_builds_a_gloo_trainer_with_sync_batchnorm(tmp_path, cache_dir) -> None:
    trainer = build(make_cfg(tmp_path, cache_dir, "trainer=ddp_cpu", "trainer.sync_batchnorm=true", *DATA)).trainer
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._process_group_backend == "gloo"
    assert trainer.num_devices == 2 and trainer.strategy._layer_sync is not None  # BatchNorm -> SyncBatchNorm
    assert type(trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"


def test_slurm_trainer_takes_its_size_from_the_allocation(tmp_path, cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_NNODES", "2")
    cfg = make_cfg(tmp_path, cache_dir, "trainer=slurm")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DDPStrategy) and isinstance(strategy.cluster_environment, SLURMEnvironment)


def test_slurm_launcher_sizes_jobs_like_the_trainer() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="extra `slurm` not installed")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=["hydra/launcher=slurm", "trainer=slurm", "trainer.devices=4",
                                        "trainer.num_nodes=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


def test_multirun_refuses_to_start_ddp_processes(tmp_path, cache_dir) -> None:
    proc = run_cli(tmp_path / "sweep", cache_dir, "+experiment=train_gaitset", "trainer=ddp_cpu", "seed=0,1", *DATA,
                   multirun=True)
    assert proc.returncode == 2 and "multirun (-m) cannot start DDP processes" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- two processes
@distributed
def test_evaluation_is_the_same_on_one_and_two_processes(ddp_teacher, tmp_path, cache_dir) -> None:
    common = ["+experiment=train_gaitgl", "student=gaitgl_narrow", "train=false", f"student.init={ddp_teacher}",
              *DATA]
    one, two = tmp_path / "one", tmp_path / "two"
    train(make_cfg(one, cache_dir, *common))
    ok(run_cli(two, cache_dir, *common, "trainer=ddp_cpu", *record(two)))

    results = [json.loads((out / "metrics.json").read_text()) for out in (one, two)]
    for result in results:
        result.pop("infer_ms_per_seq")  # timing
    assert results[0] == results[1] and any(isinstance(v, float) for v in results[0].values())
    counts = [json.loads((out / "test_metrics.json").read_text())["num_sequences"] for out in (one, two)]
    assert counts == [NUM_TEST, NUM_TEST]
    # each rank embedded its own half; the one padded sequence repeats the first
    halves = [sum(r["test"], []) for r in seen(two)]
    assert [len(h) for h in halves] == [41, 41] and sorted(set(sum(halves, []))) == list(range(NUM_TEST))


@distributed
def test_kd_fit_on_two_processes_writes_one_checkpoint(ddp_teacher, tmp_path, cache_dir) -> None:
    ok(run_cli(tmp_path, cache_dir, *kd_overrides(ddp_teacher), *DATA, "trainer=ddp_cpu", "trainer.max_steps=3",
               "+trainer.enable_checkpointing=false", *record(tmp_path)))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and not [k for k in ckpt["state_dict"] if k.startswith("teachers.")]
    assert 0.0 <= json.loads((tmp_path / "metrics.json").read_text())["NM@R1"] <= 100.0
    ranks = seen(tmp_path)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # the ranks' students stayed identical
    for labels0, labels1 in zip(ranks[0]["train"], ranks[1]["train"], strict=True):
        assert len(set(labels0)) == len(set(labels1)) == 2 and not set(labels0) & set(labels1)  # P=2 each, disjoint


@distributed
@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_nonfinite_loss_on_one_rank_stops_or_skips_every_rank(mode, tmp_path, cache_dir) -> None:
    """Rank 1's second step goes NaN, rank 0's does not: both skip that step (or both stop), no rank hangs."""
    proc = run_cli(tmp_path, cache_dir, "+experiment=train_gaitset", *DATA, "trainer=ddp_cpu", "trainer.max_steps=3",
                   "test=false", f"loss.on_nonfinite={mode}", "student.model._target_=ddp_helpers.NaNOnRankGaitSet",
                   "+student.model.nan_rank=1", "+student.model.nan_calls=[1]", *record(tmp_path))
    if mode == "raise":
        assert proc.returncode != 0
        assert "step 1: non-finite loss (triplet=nan on rank 1" in proc.stderr
        return
    ok(proc)
    ranks = seen(tmp_path)
    assert [r["skipped"] for r in ranks] == [1, 1] and ranks[0]["checksum"] == ranks[1]["checksum"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
