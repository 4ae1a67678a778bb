"""One KD training step for every ordered teacher -> student pair of the model zoo, on tiny inputs.

Checks: finite losses; gradients only on the student and its training-only parts (aux classifier, connector);
the teacher bit-identical (weights and BatchNorm statistics) and never in the optimizer.
"""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch

from gaitkd.models import MODELS
from gaitkd.module import GaitKDModule

CLASSES = 4
# Tiny widths of each registered model (the architecture is the real one; only channel counts shrink).
TINY = {
    "GaitSet": dict(in_channels=[1, 4, 8, 8], out_channels=16),
    "GaitGL": dict(channels=[4, 8, 8], class_num=CLASSES),
    "GaitPart": dict(layers_cfg=["BC-4", "BC-4", "M", "FC-8-2", "FC-8-2", "M", "FC-8-3", "FC-8-3"], out_channels=8),
    "Baseline": dict(channels=[4, 8, 8, 8], out_channels=8, class_num=CLASSES),
    "DeepGaitV2": dict(channels=[4, 8, 8, 8], class_num=CLASSES),
}
NAMES = [n for n in TINY if n in MODELS]
PAIRS = [(t, s) for t, s in itertools.permutations(NAMES, 2)]


def tiny(name: str) -> torch.nn.Module:
    return MODELS[name](**TINY[name])


def distill_cfg(teacher_has_logits: bool) -> dict:
    decision = {"_target_": "gaitkd.distill.DecisionKD", "T": 4.0, "weight": 1.0}
    return {
        "part_align": "pool", "connector": "student",
        "decision": decision if teacher_has_logits else None,  # no teacher classifier: boundary branch only
        "boundary": {"_target_": "gaitkd.distill.ActivationBoundaryLoss", "margin": 1.0, "weight": 0.003},
    }


def test_every_registered_model_has_a_tiny_variant():
    assert set(MODELS) <= set(TINY) | {"GaitBase"}, f"add tiny kwargs for {sorted(set(MODELS) - set(TINY))}"


@pytest.mark.parametrize(("teacher_name", "student_name"), PAIRS)
def test_one_kd_step(teacher_name, student_name):
    torch.manual_seed(0)
    teacher, student = tiny(teacher_name), tiny(student_name)
    with torch.no_grad():
        teacher_logits = teacher.eval()(torch.zeros(1, 3, 64, 44)).logits is not None
    module = GaitKDModule(
        student, CLASSES, partial(torch.optim.SGD, lr=0.1), teacher=teacher, distill=distill_cfg(teacher_logits),
        student_head={"aux_classifier": True, "logit_scale": 16.0, "label_smooth": True},
        teacher_logit_scale=1.0 if teacher_name == "GaitGL" else 16.0,
    )
    logged: dict[str, float] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    module.train()
    teacher = module.teachers["teacher"]
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = module.configure_optimizers()
    batch = {"sils": torch.rand(2 * CLASSES, 6, 64, 44), "labels": torch.arange(CLASSES).repeat_interleave(2)}

    loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss), (teacher_name, student_name, logged)
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values()), logged
    assert "train/teacher/boundary_kd" in logged and ("train/teacher/decision_kd" in logged) == teacher_logits
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), f"teacher {key} changed"
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    with_grad = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(n.startswith(("student.", "aux_head.", "kd.")) for n in with_grad), with_grad
    assert any(n.startswith("student.") for n in with_grad)
