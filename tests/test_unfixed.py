"""``unfixed_*`` training sampling: per-sequence frame counts in [min, max], packed batches (sils [1, ΣT, H, W] +
seqL), augmentation of packed batches, and end-to-end runs where student and teacher receive the same seqL."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import kd_overrides, make_cfg
from gaitkd.data import FrameSampler, GaitDataModule
from gaitkd.data.sampler import PKBatchSampler, SeededBatches
from gaitkd.data.transforms import SequenceAugment, TrainCollate, batch_generator
from gaitkd.run import build, train

LO, HI = 3, 9
ALL_ON = SequenceAugment(hflip=0.5, rotate=1.0, perspective=1.0, erase=1.0)


def write_corpus(root: Path, ids=("001", "002", "003", "004", "005"), train=3, frames=(6, 15)) -> Path:
    """``root/<id>/<nm-01|nm-02>/<000|090>/<view>.pkl`` random uint8 ``[T, 64, 64]``, T cycling over ``frames``."""
    rng = np.random.default_rng(0)
    n = 0
    for sid in ids:
        for typ in ("nm-01", "nm-02"):
            for view in ("000", "090"):
                folder = root / sid / typ / view
                folder.mkdir(parents=True)
                arr = rng.integers(0, 256, (frames[n % len(frames)], 64, 64), dtype=np.uint8)
                (folder / f"{view}.pkl").write_bytes(pickle.dumps(arr))
                n += 1
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": list(ids[:train]), "TEST_SET": list(ids[train:])}))
    return root


def _datamodule(root: Path, **kw) -> GaitDataModule:
    kw = {"batch_p": 3, "batch_k": 4, "steps_per_epoch": 3, "train_sample": "unfixed_unordered",
          "train_frames_min": LO, "train_frames_max": HI, **kw}
    dm = GaitDataModule(root=str(root), **kw)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------------------------ frame sampler
@pytest.mark.parametrize("mode", ["unfixed_unordered", "unfixed_ordered"])
def test_counts_in_range_independent_per_sequence(mode):
    sampler = FrameSampler(mode, min_frames=LO, max_frames=HI, skip=2)
    length = 12
    draws = [sampler(length, np.random.default_rng(seed)) for seed in range(400)]
    counts = np.array([len(d) for d in draws])
    assert counts.min() == LO and counts.max() == HI  # both ends of [min, max] are reached
    assert (np.bincount(counts, minlength=HI + 1)[LO:] > 20).all()  # every count drawn, ~uniformly (400 / 7 each)
    for d in draws:
        assert d.min() >= 0 and d.max() < length
        if mode == "unfixed_unordered":
            assert len(np.unique(d)) == len(d)  # without replacement, as fixed_unordered with that count
        else:  # increasing positions inside one window of count + skip frames of the (tiled) sequence
            pos = d + length * np.concatenate([[0], np.cumsum(np.diff(d) <= 0)])
            assert (np.diff(pos) > 0).all() and pos[-1] - pos[0] < len(d) + 2
    # the count is drawn per sequence: consecutive seeds (as one batch's items) do not share it
    assert len(set(counts[:12].tolist())) > 1
    # reproducible from the seed
    again = [sampler(length, np.random.default_rng(seed)) for seed in range(400)]
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))


def test_fixed_modes_draw_as_before():
    """The count draw only exists in unfixed modes: fixed draws are unchanged by the new fields."""
    for mode, plain in (("fixed_unordered", "fixed_unordered"), ("fixed_ordered", "fixed_ordered")):
        a = FrameSampler(mode, 7, skip=1, min_frames=2, max_frames=3)(20, np.random.default_rng(4))
        b = FrameSampler(plain, 7, skip=1)(20, np.random.default_rng(4))
        assert len(a) == 7 and np.array_equal(a, b)


@pytest.mark.parametrize(("lo", "hi"), [(None, None), (5, None), (0, 4), (6, 5), (2.5, 4)])
def test_bad_bounds_are_one_error_naming_the_keys(tmp_path, lo, hi):
    with pytest.raises(ValueError, match=r"data.train_frames_min.*data.train_frames_max") as err:
        FrameSampler("unfixed_ordered", min_frames=lo, max_frames=hi)
    assert "unfixed_ordered" in str(err.value)
    with pytest.raises(ValueError, match="data.train_frames_min"):
        GaitDataModule(root=str(tmp_path), train_sample="unfixed_unordered", train_frames_min=lo, train_frames_max=hi)


# --------------------------------------------------------------------------------------------- packed batches
def test_packed_batches_hold_the_seeded_draws(tmp_path):
    dm = _datamodule(write_corpus(tmp_path))
    items = list(SeededBatches(PKBatchSampler(dm.train_set.labels, 3, 4, seed=0, steps_per_epoch=3), seed=0))
    batches = list(dm.train_dataloader())
    assert len(batches) == len(items) == 3
    for batch, seeded in zip(batches, items):
        seq_l = batch["seqL"]
        assert seq_l.dtype == torch.int64 and seq_l.shape == (12,) and ((seq_l >= LO) & (seq_l <= HI)).all()
        assert batch["sils"].dtype == torch.float32 and batch["sils"].shape == (1, int(seq_l.sum()), 64, 44)
        assert batch["labels"].shape == batch["index"].shape == (12,)
        assert batch["index"].tolist() == [i for i, _ in seeded]
        expected = []
        for index, seed in seeded:  # each sequence: its own count and frames, from its own seed
            seq = dm.train_set[index]
            expected.append(seq[dm.train_sampler(len(seq), np.random.default_rng(seed))])
        assert seq_l.tolist() == [len(e) for e in expected]
        assert torch.equal(batch["sils"][0], torch.from_numpy(np.concatenate(expected)).float() / 255)
    assert len(set(torch.cat([b["seqL"] for b in batches]).tolist())) > 1


def test_packed_batches_reproducible_and_worker_independent(tmp_path):
    root = write_corpus(tmp_path)
    augment = {"hflip": 0.5, "rotate": 0.5, "erase": 0.5}
    runs = [list(_datamodule(root, num_workers=w, augment=augment).train_dataloader()) for w in (0, 2, 0)]
    for a, b, c in zip(*runs):
        for key in ("sils", "seqL", "index", "labels"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])


# ------------------------------------------------------------------------------------------ packed augmentation
def _sequences(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(t, 16, 11, generator=g) for t in lengths]


def test_augment_packed_equals_stacked_for_equal_lengths():
    seqs = _sequences([5, 5, 5, 5])
    stacked = torch.stack(seqs)
    packed = torch.cat(seqs)[None]
    out = ALL_ON(packed, batch_generator([1, 2]), seqL=torch.tensor([5, 5, 5, 5]))
    assert out.shape == packed.shape
    assert torch.equal(out[0], ALL_ON(stacked, batch_generator([1, 2])).flatten(0, 1))


def test_augment_packed_one_draw_per_sequence_as_if_alone():
    """Sequences of different lengths, each a repeated frame: every frame of sequence b gets exactly the transform
    that sequence b gets in the stacked path with the same generator (the draws depend on N, H, W only)."""
    lengths = [3, 7, 1, 5, 2, 6]
    firsts = torch.stack([s[0] for s in _sequences(lengths, seed=1)])  # [N, H, W]
    packed = torch.cat([f.expand(t, -1, -1) for f, t in zip(firsts, lengths)])[None]
    out = ALL_ON(packed, torch.Generator().manual_seed(3), seqL=torch.tensor(lengths))
    alone = ALL_ON(firsts[:, None], torch.Generator().manual_seed(3))[:, 0]  # [N, H, W]: one frame per sequence
    for b, segment in enumerate(out[0].split(lengths)):
        assert torch.equal(segment, alone[b].expand_as(segment))
    assert not torch.equal(out, packed) and torch.equal(packed[0, :3], firsts[0].expand(3, -1, -1))  # input untouched


def test_augment_packed_rejects_mismatched_seql():
    with pytest.raises(ValueError, match=r"sum\(seqL\)=9"):
        ALL_ON(torch.rand(1, 8, 16, 11), None, seqL=torch.tensor([4, 5]))


def test_train_collate_packs_and_augments():
    lengths = [4, 2, 6]
    items = [(np.full((t, 8, 6), 255, np.uint8), c, i, 10 + i) for i, (t, c) in enumerate(zip(lengths, (0, 1, 1)))]
    plain = TrainCollate(None, packed=True)(items)
    assert plain["seqL"].tolist() == lengths and plain["sils"].shape == (1, 12, 8, 6)
    assert torch.equal(plain["sils"], torch.ones(1, 12, 8, 6))
    augmented = TrainCollate(SequenceAugment(erase=1.0), packed=True)(items)
    assert torch.equal(augmented["seqL"], plain["seqL"]) and (augmented["sils"] == 0).any()


# -------------------------------------------------------------------------------------------------- end to end
UNFIXED = ("data.train_sample=unfixed_unordered", f"data.train_frames_min={LO}", f"data.train_frames_max={HI}")


def test_end_to_end_unfixed_run(tmp_path, cache_dir):
    cfg = make_cfg(tmp_path, cache_dir, "+experiment=train_gaitset", *UNFIXED, "data.augment.rotate=0.5")
    metrics = train(cfg)
    assert 0.0 <= metrics["NM@R1"] <= 100.0 and (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_kd_run_gives_student_and_teacher_the_same_seql(tmp_path, cache_dir, teacher_ckpt):
    cfg = make_cfg(tmp_path, cache_dir, *kd_overrides(teacher_ckpt), "data.train_sample=unfixed_ordered",
                   f"data.train_frames_min={LO}", f"data.train_frames_max={HI}", "test=false")
    built = build(cfg)
    seen: dict[str, list] = {"student": [], "teacher": []}
    models = {"student": built.module.student, "teacher": built.module.teachers["teacher"]}
    for name, calls in seen.items():
        models[name].register_forward_pre_hook(
            lambda _, args, kwargs, calls=calls: calls.append((args[0], kwargs.get("seqL"))), with_kwargs=True)
    built.trainer.fit(built.module, datamodule=built.datamodule)
    student, teacher = seen["student"], seen["teacher"]
    assert len(student) == len(teacher) == cfg.trainer.max_steps
    for (s_sils, s_len), (t_sils, t_len) in zip(student, teacher):
        assert s_len is not None and t_len is s_len and t_sils is s_sils
        assert s_sils.shape[:2] == (1, int(s_len.sum())) and ((s_len >= LO) & (s_len <= HI)).all()
