"""Triplet and part-wise CE losses against OpenGait's outputs (``loss_train.pt``) plus small property tests."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import load_fixture
from gaitkd.losses import LOSSES, PartCrossEntropyLoss, TripletLoss, build_loss

LOSS_RTOL, LOSS_ATOL = 2e-5, 1e-6


def assert_close_loss(got: torch.Tensor | float, ref: torch.Tensor | float, what: str) -> None:
    got, ref = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    assert torch.allclose(got, ref, rtol=LOSS_RTOL, atol=LOSS_ATOL), f"{what}: {got} vs {ref}"


def assert_close_grad(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    atol = 1e-5 * ref.abs().max().item()
    assert torch.allclose(got, ref, rtol=1e-4, atol=atol), f"{what}: max diff {(got - ref).abs().max().item()}"


@pytest.fixture(scope="module")
def train_fx() -> dict:
    return load_fixture("loss_train.pt")


def test_triplet_matches_opengait(train_fx: dict) -> None:
    cases = train_fx["triplet"]["cases"]
    assert cases, "no triplet cases in loss_train.pt"
    for name, case in cases.items():
        x = case["embeddings"].clone().requires_grad_(True)
        loss, info = build_loss("triplet", margin=case["margin"])(embeddings=x, labels=case["labels"])
        assert loss.shape == case["loss"].shape, name
        assert_close_loss(loss.detach(), case["loss"], f"{name} loss")
        assert_close_loss(loss.detach().mean(), case["loss_mean"], f"{name} loss_mean")
        for key in ("loss", "hard_loss", "mean_dist"):
            assert_close_loss(info[key], case["info"][key], f"{name} info.{key}")
        assert torch.equal(info["loss_num"], case["info"]["loss_num"]), f"{name} loss_num"
        loss.mean().backward()
        assert_close_grad(x.grad, case["grad_embeddings"], f"{name} grad")


def reference_triplet(x: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Slow, literal per-part batch-all triplet (float64) for arbitrary label multisets -> loss [P]."""
    x = x.double()
    out = []
    for p in range(x.size(2)):
        d = torch.cdist(x[:, :, p], x[:, :, p])
        terms = [
            max(d[i, a] - d[i, n] + margin, 0.0)
            for i, a, n in itertools.product(range(len(labels)), repeat=3)
            if labels[a] == labels[i] and labels[n] != labels[i]
        ]
        terms = torch.tensor(terms)
        nz = (terms > 0).sum()
        out.append(terms.sum() / nz if nz else torch.tensor(0.0))
    return torch.stack(out)


def test_triplet_unequal_class_counts() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 1, 3, 2, 3, 1, 7])  # counts 3, 2, 1, 1
    x = torch.randn(len(labels), 5, 3, generator=g)
    loss, info = TripletLoss(margin=0.5)(embeddings=x, labels=labels)
    assert torch.allclose(loss.double(), reference_triplet(x, labels, 0.5), rtol=1e-5, atol=1e-6)
    assert info["loss_num"].shape == (3,)


def test_triplet_gradient_finite_for_duplicates() -> None:
    x = torch.randn(4, 8, 2).repeat(2, 1, 1).requires_grad_(True)  # exact duplicates: zero distances
    loss, _ = TripletLoss()(embeddings=x, labels=torch.arange(4).repeat(2))
    loss.mean().backward()
    assert torch.isfinite(x.grad).all()


def test_triplet_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="TripletLoss"):
        TripletLoss()(embeddings=torch.randn(4, 8), labels=torch.arange(4))


def test_ce_matches_opengait(train_fx: dict) -> None:
    cases = train_fx["ce"]
    assert cases, "no ce cases in loss_train.pt"
    for name, case in cases.items():
        x = case["logits"].clone().requires_grad_(True)
        crit = PartCrossEntropyLoss(
            scale=case["scale"], label_smooth=case["label_smooth"], eps=case["eps"], log_accuracy=case["log_accuracy"]
        )
        loss, info = crit(logits=x, labels=case["labels"])
        assert loss.dim() == 0, name
        assert_close_loss(loss.detach(), case["loss"], f"{name} loss")
        assert_close_loss(info["loss"], case["info"]["loss"], f"{name} info.loss")
        assert float(info["accuracy"]) == case["info"]["accuracy"], f"{name} accuracy"
        loss.backward()
        assert_close_grad(x.grad, case["grad_logits"], f"{name} grad")


def test_ce_without_accuracy_and_bad_shape() -> None:
    loss, info = PartCrossEntropyLoss(log_accuracy=False)(logits=torch.randn(3, 5, 2), labels=torch.tensor([0, 1, 4]))
    assert "accuracy" not in info and torch.isfinite(loss)
    with pytest.raises(ValueError, match="PartCrossEntropyLoss"):
        PartCrossEntropyLoss()(logits=torch.randn(3, 5), labels=torch.tensor([0, 1, 4]))


def test_training_losses_registered() -> None:
    assert LOSSES["triplet"] is TripletLoss and LOSSES["ce"] is PartCrossEntropyLoss
