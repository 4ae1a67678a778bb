"""The ``perf`` speed switches: validated config, exact (or documented-close) KD losses, plain state dicts."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from gaitkd.errors import ConfigError
from gaitkd.module import GaitKDModule
from gaitkd.perf import Perf
from test_kd_pairs import CLASSES, distill_cfg, tiny


def kd_loss(perf: dict | None) -> tuple[torch.Tensor, GaitKDModule]:
    torch.manual_seed(0)
    module = GaitKDModule(tiny("GaitSet"), CLASSES, partial(torch.optim.SGD, lr=0.1), teacher=tiny("GaitGL"),
                          distill=distill_cfg(True), student_head={"aux_classifier": True, "logit_scale": 16.0},
                          perf=perf)
    module.log = lambda *a, **k: None
    batch = {"sils": torch.rand(2 * CLASSES, 6, 64, 44, generator=torch.Generator().manual_seed(1)),
             "labels": torch.arange(CLASSES).repeat_interleave(2)}
    loss = module.train().training_step(batch, 0)
    loss.backward()
    return loss.detach(), module


def test_defaults_and_bad_values():
    assert Perf.from_config(None) == Perf() and Perf().teacher_grad_mode == "inference"
    with pytest.raises(ConfigError, match="perf.compile"):
        Perf.from_config({"compile": True})
    with pytest.raises(ConfigError, match="teacher_autocast"):
        Perf.from_config({"teacher_autocast": "fp8"})
    with pytest.raises(ConfigError, match="teacher_grad_mode"):
        Perf.from_config({"teacher_grad_mode": "enable_grad"})


def test_switches_keep_the_loss():
    reference, plain = kd_loss(None)
    no_grad, _ = kd_loss({"teacher_grad_mode": "no_grad"})
    assert torch.equal(no_grad, reference)
    channels_last, module = kd_loss({"channels_last": True})
    torch.testing.assert_close(channels_last, reference, rtol=1e-5, atol=1e-6)
    assert set(module.state_dict()) == set(plain.state_dict())
    bf16, _ = kd_loss({"teacher_autocast": "bf16"})  # changes the teacher outputs by bf16 rounding: close, not equal
    torch.testing.assert_close(bf16, reference, rtol=2e-2, atol=1e-3)
