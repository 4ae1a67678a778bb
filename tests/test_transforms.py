"""Sequence augmentations: identity when off, OpenGait semantics per transform, one draw per sequence, determinism,
the training data path (augmented, reproducible, evaluation untouched) and identical teacher / student input."""

from __future__ import annotations

import json
import pickle
from dataclasses import fields
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gaitkd.data import GaitDataModule
from gaitkd.data.transforms import (
    SequenceAugment,
    TrainCollate,
    batch_generator,
    build_augment,
    erase_masks,
    perspective_matrices,
    rotation_matrices,
    warp,
)
from gaitkd.models import MODELS
from gaitkd.module import GaitKDModule
from gaitkd.run import CONF_DIR

DEFAULTS = SequenceAugment()
PROBS = ("hflip", "rotate", "perspective", "erase")
ALL_ON = SequenceAugment(hflip=0.5, rotate=1.0, perspective=1.0, erase=1.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blob(n: int = 6, t: int = 4, h: int = 64, w: int = 44) -> torch.Tensor:
    """``[N, T, H, W]`` silhouette-like input: a bright off-centre body on black, every frame different."""
    x = torch.zeros(n, t, h, w)
    x[..., h // 6 : h - h // 8, w // 3 : w // 3 + w // 4] = 1.0
    return x * torch.linspace(0.5, 1.0, t)[None, :, None, None]


# -------------------------------------------------------------------------------------------- identity / config
def test_all_zero_is_identity_without_rng():
    g = gen(0)
    state = g.get_state()
    x = torch.rand(3, 5, 16, 11)
    assert DEFAULTS(x, g) is x
    assert torch.equal(g.get_state(), state)
    assert build_augment(None) is None and build_augment({p: 0.0 for p in PROBS}) is None
    assert TrainCollate(DEFAULTS).augment is None


def test_config_block_defaults_off_and_validated():
    block = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "casia_b.yaml")["augment"])
    assert set(block) <= {f.name for f in fields(SequenceAugment)}
    assert all(block[p] == 0 for p in PROBS) and build_augment(block) is None
    assert build_augment({**block, "rotate": 0.5}) == SequenceAugment(**{**block, "rotate": 0.5})
    with pytest.raises(ValueError, match="unknown keys.*'flip'"):
        build_augment({"flip": 0.5})
    with pytest.raises(ValueError, match="data.augment.erase"):
        SequenceAugment(erase=1.5)
    with pytest.raises(ValueError, match="erase_sl"):
        SequenceAugment(erase_sl=DEFAULTS.erase_sh * 2)


# ---------------------------------------------------------------------------------------------- each transform
def test_flip_p1_equals_torch_flip():
    x = torch.rand(3, 4, 16, 11)
    assert torch.equal(SequenceAugment(hflip=1.0)(x, gen(0)), torch.flip(x, dims=[-1]))


def test_rotation_matches_cv2_convention():
    # Square odd frames: OpenGait's centre (h // 2, w // 2) is the true centre and 90 degrees is an exact rot90
    # (cv2: positive angles rotate counter-clockwise on screen).
    x = torch.rand(2, 3, 9, 9)
    out = warp(x, rotation_matrices(torch.full((2,), 90.0), 9, 9))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(warp(x, rotation_matrices(torch.zeros(2), 9, 9)), x)


def test_rotation_keeps_shape_and_range_moves_mass():
    x = blob()
    out = SequenceAugment(rotate=1.0, rotate_degree=DEFAULTS.rotate_degree)(x, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    moved = (out - x).abs().sum(dim=(1, 2, 3))
    assert (moved > 0).all()
    # mass is moved, not created: a small rotation keeps the total close to the input's
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.05, atol=0)


def test_perspective_corners_and_effect():
    n, h, w = 64, 64, 44
    cut = int(w // 44) * 10
    maps = perspective_matrices(n, h, w, gen(2))
    canvas = torch.tensor([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [w, h, 1.0], [0.0, h, 1.0]], dtype=torch.float64)
    src = maps @ canvas.T  # [n, 3, 4]: canvas corners -> source corners
    src = src[:, :2] / src[:, 2:]
    torch.testing.assert_close(src[:, 1], torch.tensor([0.0, 0.0, h, h], dtype=torch.float64).expand(n, 4))
    xs = src[:, 0].round()
    torch.testing.assert_close(src[:, 0], xs)  # integer corner jitter
    left, right = xs[:, [0, 3]], xs[:, [1, 2]]
    assert ((left >= 0) & (left <= cut - 1)).all() and ((right >= w - cut) & (right <= w - 1)).all()
    assert len(left.unique()) == len(right.unique()) == cut  # the whole jitter range [0, cut) is drawn
    x = blob(h=h, w=w)
    out = SequenceAugment(perspective=1.0)(x, gen(3))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)


def test_erasing_zeros_one_rectangle_of_bounded_area():
    n, t, h, w = 16, 3, 64, 44
    sl, sh = DEFAULTS.erase_sl, DEFAULTS.erase_sh
    augment = SequenceAugment(erase=1.0, erase_sl=sl, erase_sh=sh, erase_r1=DEFAULTS.erase_r1)
    out = augment(torch.ones(n, t, h, w), gen(4))
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same rectangle in every frame
    for frame in zero[:, 0]:
        rows, cols = frame.any(1).nonzero()[:, 0], frame.any(0).nonzero()[:, 0]
        rh, rw = len(rows), len(cols)
        assert rows[-1] - rows[0] + 1 == rh and cols[-1] - cols[0] + 1 == rw  # contiguous
        assert frame.sum() == rh * rw  # filled bounding box: a rectangle
        # sides are rounded from sqrt(area * aspect), sqrt(area / aspect): |rh * rw - area| <= (rh + rw) / 2 + 3 / 4
        slack = (rh + rw) / 2 + 0.75
        assert sl * h * w - slack <= rh * rw <= sh * h * w + slack
    masks = erase_masks(2000, h, w, sl, sh, DEFAULTS.erase_r1, gen(5))
    frac = masks.sum(dim=(1, 2)).double() / (h * w)
    assert frac.min() < sl + (sh - sl) / 4 and frac.max() > sh - (sh - sl) / 4  # spans the range


# ------------------------------------------------------------------------------------------ per sequence / seeds
def test_one_draw_per_sequence():
    x = blob(n=8, t=5)
    x = x[:, :1].expand_as(x).contiguous()  # every frame of a sequence identical, sequences identical
    out = ALL_ON(x, gen(6))
    assert torch.equal(out, out[:, :1].expand_as(out))  # all frames of a sequence got the same transform
    assert len({o[0].numpy().tobytes() for o in out}) == len(out)  # sequences got different draws


def test_deterministic_per_seed_and_input_untouched():
    x = blob()
    before = x.clone()
    a, b, c = ALL_ON(x, gen(7)), ALL_ON(x, gen(7)), ALL_ON(x, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before)
    assert torch.equal(ALL_ON(x, batch_generator([1, 2, 3])), ALL_ON(x, batch_generator([1, 2, 3])))
    assert not torch.equal(ALL_ON(x, batch_generator([1, 2, 3])), ALL_ON(x, batch_generator([1, 2, 4])))


# ------------------------------------------------------------------------------------------------- data path
def write_corpus(root: Path, ids: list[str], train: list[str], h: int = 64, w: int = 44) -> Path:
    rng = np.random.default_rng(0)
    for i in ids:
        for t in ("nm-01", "nm-02"):
            path = root / i / t / "000" / "000.pkl"
            path.parent.mkdir(parents=True)
            path.write_bytes(pickle.dumps(rng.integers(0, 256, (6, h, w), dtype=np.uint8)))
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": train, "TEST_SET": sorted(set(ids) - set(train))}))
    return root


def test_datamodule_augments_training_only(tmp_path):
    ids = ["001", "002", "003", "004"]
    write_corpus(tmp_path, ids, ids[:3])
    kw = dict(root=str(tmp_path), batch_p=2, batch_k=2, train_frames=4, steps_per_epoch=2, eval_batch_size=2)
    on = {p: 1.0 for p in PROBS}

    def batches(augment):
        dm = GaitDataModule(augment=augment, **kw)
        dm.setup("fit")
        return list(dm.train_dataloader()), list(dm.test_dataloader())

    (plain, test_plain), (aug, test_aug), (again, _) = batches(None), batches(on), batches(on)
    for p, a, r in zip(plain, aug, again):
        assert torch.equal(p["index"], a["index"]) and torch.equal(p["labels"], a["labels"])  # same draws
        assert a["sils"].shape == p["sils"].shape and not torch.equal(a["sils"], p["sils"])
        assert a["sils"].min() >= 0 and a["sils"].max() <= 1
        assert torch.equal(a["sils"], r["sils"])  # reproducible from data.seed
    assert not torch.equal(aug[0]["sils"], aug[1]["sils"])
    assert all(torch.equal(p["sils"], a["sils"]) for p, a in zip(test_plain, test_aug))  # evaluation untouched


def test_teacher_and_student_get_the_same_input():
    classes = 2
    tiny = partial(MODELS["Baseline"], channels=[4, 4, 4, 4], out_channels=4, class_num=classes)
    torch.manual_seed(0)
    module = GaitKDModule(
        tiny(), classes, partial(torch.optim.SGD, lr=0.1), teacher=tiny(),
        distill={"boundary": {"_target_": "gaitkd.distill.ActivationBoundaryLoss", "margin": 1.0, "weight": 1.0}},
    )
    module.log = lambda *a, **k: None
    seen: dict[str, torch.Tensor] = {}
    for name, model in (("student", module.student), ("teacher", module.teachers["teacher"])):
        model.register_forward_pre_hook(lambda _, args, name=name: seen.__setitem__(name, args[0]))
    items = [(np.full((3, 64, 44), 255, np.uint8), c, i, 10 + i) for i, c in enumerate([0, 0, 1, 1])]
    batch = TrainCollate(ALL_ON)(items)
    module.training_step(batch, 0)
    assert seen["student"] is seen["teacher"] is batch["sils"]
