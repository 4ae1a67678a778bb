"""Export: the student alone, exactly the plain model's parameters, the checkpoint's embeddings."""

from __future__ import annotations

import pytest
import torch

from conftest import kd_overrides, make_cfg
from gaitkd.cli import main as cli_main
from gaitkd.cli import model_rows
from gaitkd.errors import ConfigError
from gaitkd.export import EmbeddingExport, export_student, load_student
from gaitkd.models import count_params
from gaitkd.run import train


@pytest.fixture(scope="module")
def kd_ckpt(tmp_path_factory, cache_dir, teacher_ckpt):
    """A GaitKD checkpoint whose module holds a connector and an aux classifier besides the student."""
    out = tmp_path_factory.mktemp("kd")
    train(make_cfg(out, cache_dir, *kd_overrides(teacher_ckpt), "student=gaitset_narrow", "test=false"))
    return out / "checkpoints" / "last.ckpt"


def test_exported_student_is_the_plain_student(kd_ckpt, tmp_path):
    state = torch.load(kd_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("aux_head.") for k in state) and any(k.startswith("kd.") for k in state)

    report = export_student(kd_ckpt, tmp_path / "student.pt", frames=12, repeats=2)
    exported = torch.jit.load(report.path)
    assert report.params == report.plain_params == sum(p.numel() for p in exported.parameters())
    student, _ = load_student(kd_ckpt)
    assert report.params == count_params(student)
    assert report.flops > 0 and report.latency_ms > 0 and report.plain_latency_ms > 0

    # embeddings equal the checkpoint's student, also for another batch size and sequence length
    student_weights = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    assert all(torch.equal(student.state_dict()[k], v) for k, v in student_weights.items())
    sils = torch.rand(3, 17, 64, 44)
    with torch.no_grad():
        assert torch.allclose(exported(sils), EmbeddingExport(student)(sils), atol=1e-6)


def test_export_cli_and_bad_checkpoint(kd_ckpt, tmp_path, capsys):
    cli_main(["export", str(kd_ckpt), str(tmp_path / "s.pt"), "--frames", "6", "--repeats", "1",
              "--json", str(tmp_path / "r.json")])
    assert (tmp_path / "s.pt").is_file() and (tmp_path / "r.json").is_file()
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ConfigError, match="student model config"):
        export_student(tmp_path / "bare.ckpt", tmp_path / "x.pt")


def test_models_report_lists_parts_and_widths():
    rows = {r["config"]: r for r in model_rows(["gaitset_small", "gaitgl_narrow"], frames=6)}
    assert rows["gaitset_small"]["parts"] == 62 and rows["gaitset_small"]["channels"] == 64
    assert not rows["gaitset_small"]["classifier"] and rows["gaitgl_narrow"]["classifier"]
    assert rows["gaitgl_narrow"]["gflops"] > rows["gaitset_small"]["gflops"] > 0


@pytest.mark.parametrize("name", ["GaitSet", "GaitGL", "GaitPart", "Baseline", "DeepGaitV2"])
def test_opengait_checkpoint_round_trips_through_export(name, tmp_path):
    """OpenGait state_dict -> our model -> `gaitkd export` -> the embeddings OpenGait computed."""
    from omegaconf import OmegaConf

    from conftest import load_fixture

    fx = load_fixture(f"models/{name}.pt")
    ckpt = tmp_path / f"{name}-iter.pt"
    torch.save({"model": fx["state_dict"], "optimizer": {}, "iteration": 40000}, ckpt)
    OmegaConf.save(OmegaConf.create(fx["config"]), tmp_path / "config.yaml")
    frames = fx["input"]["sils"].shape[1]
    cli_main(["export", str(ckpt), str(tmp_path / "ts.pt"), "--opengait-config", str(tmp_path / "config.yaml"),
              "--frames", str(frames), "--repeats", "1"])
    exported = torch.jit.load(str(tmp_path / "ts.pt"))
    with torch.no_grad():
        got = exported(fx["input"]["sils"])
    want = fx["outputs"]["inference_feat"]["embeddings"]  # GaitGL: one sequence per forward, as OpenGait
    assert (got - want).abs().max() <= 1e-5


def test_onnx_export_matches_opengait(tmp_path):
    """With the `onnx` extra installed: ONNX file with dynamic batch / frames, equal to OpenGait's embeddings."""
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the `onnx` extra")
    from omegaconf import OmegaConf

    from conftest import load_fixture

    fx = load_fixture("models/GaitSet.pt")
    torch.save({"model": fx["state_dict"]}, tmp_path / "c.pt")
    OmegaConf.save(OmegaConf.create(fx["config"]), tmp_path / "c.yaml")
    report = export_student(tmp_path / "c.pt", tmp_path / "s.pt", frames=fx["input"]["sils"].shape[1], repeats=1,
                            onnx=True, opengait_config=tmp_path / "c.yaml")
    session = ort.InferenceSession(report.onnx_path)
    sils = fx["input"]["sils"].numpy()
    got = session.run(None, {"sils": sils})[0]
    assert abs(got - fx["outputs"]["inference_feat"]["embeddings"].numpy()).max() <= 1e-5
    shorter = session.run(None, {"sils": sils[:1, : sils.shape[1] // 2]})[0]
    assert shorter.shape == (1, *got.shape[1:])
