"""Tests of gaitkd.data: layout discovery, pkl validation, width cut, partitions, frame sampling, samplers,
and the DataModule end to end on tiny pkl folders written here."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from gaitkd.data import (
    FrameSampler,
    GaitDataError,
    GaitDataModule,
    GaitDataWarning,
    GaitSequenceDataset,
    InferenceBatchSampler,
    PKBatchSampler,
    SeededBatches,
    all_ordered,
    collate_eval,
    collate_train,
    fixed_ordered,
    fixed_unordered,
    load_partition,
    rule_partition,
)


def write_corpus(
    root: Path,
    ids=("001", "002", "003", "004", "005", "006"),
    types=("nm-01", "nm-02", "bg-01"),
    views=("000", "090"),
    frames=(7, 12),
    size=(64, 44),
    seed=0,
    partition: tuple[list[str], list[str]] | None = None,
) -> Path:
    """Write ``root/<id>/<type>/<view>/<view>.pkl`` random uint8 ``[T, *size]`` arrays (T cycles over ``frames``)."""
    rng = np.random.default_rng(seed)
    n = 0
    for i in ids:
        for t in types:
            for v in views:
                folder = root / i / t / v
                folder.mkdir(parents=True, exist_ok=True)
                arr = rng.integers(0, 256, (frames[n % len(frames)], *size), dtype=np.uint8)
                (folder / f"{v}.pkl").write_bytes(pickle.dumps(arr))
                n += 1
    if partition is not None:
        (root / "partition.json").write_text(json.dumps({"TRAIN_SET": partition[0], "TEST_SET": partition[1]}))
    return root


def write_pkl(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))
    return path


# ----------------------------------------------------------------------------------------------- dataset
def test_layout_discovery_sorted(tmp_path):
    ids, types, views = ("010", "002", "005"), ("nm-02", "bg-01"), ("180", "000", "090")
    write_corpus(tmp_path, ids=ids, types=types, views=views)
    ds = GaitSequenceDataset(tmp_path)
    keys = list(zip(ds.labels, ds.types, ds.views))
    assert keys == sorted(keys)
    assert len(ds) == len(ids) * len(types) * len(views)
    assert set(ds.labels) == set(ids)
    assert all(len(p) == 1 and p[0].endswith(".pkl") for p in ds.paths)
    seq = ds[0]
    assert seq.dtype == np.uint8 and seq.ndim == 3


def test_ids_filter_and_missing_warning(tmp_path):
    write_corpus(tmp_path, ids=("001", "002", "003"))
    with pytest.warns(GaitDataWarning, match="1 of 3 requested ids"):
        ds = GaitSequenceDataset(tmp_path, ids=["003", "001", "999"])
    assert sorted(set(ds.labels)) == ["001", "003"]
    with pytest.raises(GaitDataError, match="none of the requested ids"), pytest.warns(GaitDataWarning):
        GaitSequenceDataset(tmp_path, ids=["998", "999"])


def test_missing_root_mentions_synthetic(tmp_path):
    with pytest.raises(GaitDataError, match="data=synthetic") as err:
        GaitSequenceDataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty" / "001").mkdir(parents=True)
    with pytest.raises(GaitDataError, match="data=synthetic"):
        GaitSequenceDataset(tmp_path / "empty")


@pytest.mark.parametrize(
    ("obj", "found"),
    [
        (np.zeros((3, 64, 44), np.float32), "float32"),
        (np.zeros((64, 44), np.uint8), "shape \\[64, 44\\]"),
        ([1, 2, 3], "found list"),
        (np.zeros((0, 64, 44), np.uint8), "empty sequence"),
    ],
)
def test_bad_pkl_names_file(tmp_path, obj, found):
    path = write_pkl(tmp_path / "001" / "nm-01" / "000" / "000.pkl", obj)
    ds = GaitSequenceDataset(tmp_path)
    with pytest.raises(GaitDataError, match=found) as err:
        ds[0]
    assert str(path) in str(err.value)
    with pytest.raises(GaitDataError, match=found):  # the setup-time check catches it too
        ds.validate()


def test_not_a_pickle_names_file(tmp_path):
    path = tmp_path / "001" / "nm-01" / "000" / "000.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pickle")
    with pytest.raises(GaitDataError, match="cannot unpickle") as err:
        GaitSequenceDataset(tmp_path)[0]
    assert str(path) in str(err.value)


@pytest.mark.parametrize("side", [64, 128])
def test_square_pkls_are_cut_narrow_ones_kept(tmp_path, side):
    rng = np.random.default_rng(1)
    square = rng.integers(0, 256, (5, side, side), dtype=np.uint8)
    cut = side // 64 * 10
    narrow = rng.integers(0, 256, (5, side, side - 2 * cut), dtype=np.uint8)
    write_pkl(tmp_path / "001" / "nm-01" / "000" / "000.pkl", square)
    write_pkl(tmp_path / "001" / "nm-01" / "018" / "018.pkl", narrow)
    ds = GaitSequenceDataset(tmp_path)
    np.testing.assert_array_equal(ds[0], square[:, :, cut : side - cut])
    np.testing.assert_array_equal(ds[1], narrow)  # never cut twice


def test_cache_and_modalities(tmp_path):
    folder = tmp_path / "001" / "nm-01" / "000"
    a = write_pkl(folder / "a-sils.pkl", np.full((4, 64, 44), 1, np.uint8))
    b = write_pkl(folder / "b-other.pkl", np.full((4, 64, 44), 2, np.uint8))
    assert GaitSequenceDataset(tmp_path).paths == [[str(a), str(b)]]
    assert GaitSequenceDataset(tmp_path, modalities=[1])[0][0, 0, 0] == 2
    assert GaitSequenceDataset(tmp_path, modalities=["b-other"])[0][0, 0, 0] == 2
    with pytest.raises(GaitDataError, match="modality"):
        GaitSequenceDataset(tmp_path, modalities=[5])
    ds = GaitSequenceDataset(tmp_path, cache=True)
    first = ds[0]
    assert ds[0] is first


# --------------------------------------------------------------------------------------------- partition
def test_load_partition(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"TRAIN_SET": ["001", "002"], "TEST_SET": ["003"], "PROBE_SET": ["003-a-b"]}))
    part = load_partition(path)
    assert (part.train, part.test, part.probe) == (["001", "002"], ["003"], ["003-a-b"])
    path.write_text(json.dumps({"TRAIN_SET": ["001"], "TEST_SET": ["002"]}))
    assert load_partition(path).probe is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"TRAIN_SET": ["001"]}, "missing key TEST_SET"),
        ({"TRAIN_SET": ["001", "002"], "TEST_SET": ["002"]}, "both TRAIN_SET and TEST_SET"),
        ({"TRAIN_SET": [1], "TEST_SET": ["002"]}, "TRAIN_SET must be a list of id strings"),
        ([], "JSON object"),
    ],
)
def test_partition_errors_name_file(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(GaitDataError, match=match) as err:
        load_partition(path)
    assert str(path) in str(err.value)
    with pytest.raises(GaitDataError, match="not found"):
        load_partition(tmp_path / "absent.json")


def test_rule_partition():
    part = rule_partition(["003", "001", "002", "004"], 3)
    assert part.train == ["001", "002", "003"] and part.test == ["004"]
    with pytest.raises(GaitDataError):
        rule_partition(["001", "002"], 2)


# ------------------------------------------------------------------------------------------ frame sampling
@pytest.mark.parametrize("length", [5, 30, 100])
def test_fixed_unordered(length):
    rng = np.random.default_rng(0)
    num = 30
    idx = fixed_unordered(length, num, rng)
    assert idx.shape == (num,) and idx.min() >= 0 and idx.max() < length
    if length >= num:
        assert len(np.unique(idx)) == num  # without replacement
    draws = np.stack([fixed_unordered(length, num, rng) for _ in range(20)])
    assert (np.diff(draws, axis=1) < 0).any()  # random order, not sorted


@pytest.mark.parametrize(("length", "skip"), [(100, 10), (30, 0), (12, 4), (3, 0), (7, 0)])
def test_fixed_ordered(length, skip):
    rng = np.random.default_rng(0)
    num = 20
    window = num + skip
    for _ in range(50):
        idx = fixed_ordered(length, num, skip, rng)
        assert idx.shape == (num,) and idx.min() >= 0 and idx.max() < length
        if length >= window:
            assert (np.diff(idx) > 0).all() and idx[-1] - idx[0] < window
            if skip == 0:
                np.testing.assert_array_equal(idx, np.arange(idx[0], idx[0] + num))
        else:  # tiled: a window covers each frame at most once per repetition
            assert np.bincount(idx, minlength=length).max() <= -(-window // length)
            if skip == 0:  # the whole window, consecutive modulo the length
                assert (np.diff(idx) % length == 1).all()


def test_all_ordered():
    np.testing.assert_array_equal(all_ordered(7), np.arange(7))
    np.testing.assert_array_equal(all_ordered(7, limit=5), np.arange(5))
    np.testing.assert_array_equal(all_ordered(3, limit=5), np.arange(3))


def test_frame_sampler_modes_and_errors():
    rng = np.random.default_rng(0)
    assert len(FrameSampler("fixed_unordered", 9)(50, rng)) == 9
    assert len(FrameSampler("fixed_ordered", 9, skip=3)(50, rng)) == 9
    assert len(FrameSampler("all_ordered", limit=4)(50)) == 4
    with pytest.raises(ValueError, match="train_sample"):
        FrameSampler("fixed_sideways")
    with pytest.raises(ValueError, match="Generator"):
        FrameSampler("fixed_unordered")(10)


def test_collates():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 256, (t, 8, 6), dtype=np.uint8) for t in (3, 5, 2)]
    out = collate_eval([(s, i) for i, s in enumerate(seqs)])
    assert out["sils"].dtype == torch.float32 and out["sils"].shape == (1, 10, 8, 6)
    assert out["seqL"].tolist() == [3, 5, 2] and out["seqL"].dtype == torch.int64
    # bitwise equal to OpenGait's float64 division cast to float32
    expected = (np.concatenate(seqs) / 255.0).astype(np.float32)
    assert torch.equal(out["sils"][0], torch.from_numpy(expected))
    batch = collate_train([(s[:2], lab, i) for i, (s, lab) in enumerate(zip(seqs, (4, 0, 2)))])
    assert batch["sils"].shape == (3, 2, 8, 6) and batch["sils"].dtype == torch.float32
    assert batch["labels"].tolist() == [4, 0, 2] and batch["labels"].dtype == torch.int64
    assert batch["index"].tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- samplers
def _labels(counts: dict[str, int]) -> list[str]:
    labels = [lab for lab, c in counts.items() for _ in range(c)]
    return list(np.random.default_rng(0).permutation(labels))  # dataset order need not be grouped


def test_pk_batches():
    counts = {f"{i:03d}": c for i, c in enumerate([6, 2, 9, 4, 4, 1, 7, 5, 3, 8])}
    labels = _labels(counts)
    p, k = 4, 4
    sampler = PKBatchSampler(labels, p, k, seed=3, rank=0, world_size=1)
    assert len(sampler) == max(1, len(labels) // (p * k))
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert len(batch) == p * k
        ids = [labels[i] for i in batch]
        groups = [ids[j * k : (j + 1) * k] for j in range(p)]
        assert all(len(set(g)) == 1 for g in groups)  # K consecutive items per identity
        assert len({g[0] for g in groups}) == p  # P distinct identities
        for j, g in enumerate(groups):
            chosen = batch[j * k : (j + 1) * k]
            if counts[g[0]] >= k:
                assert len(set(chosen)) == k  # without replacement when possible


def test_pk_determinism_and_epochs():
    labels = _labels({f"{i:03d}": 5 for i in range(12)})
    a = PKBatchSampler(labels, 3, 2, seed=1, rank=0, world_size=1, steps_per_epoch=4)
    b = PKBatchSampler(labels, 3, 2, seed=1, rank=0, world_size=1, steps_per_epoch=4)
    assert len(a) == 4 and list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(PKBatchSampler(labels, 3, 2, seed=2, rank=0, world_size=1, steps_per_epoch=4)) != first


def test_pk_ranks_get_distinct_ids():
    labels = _labels({f"{i:03d}": 4 for i in range(9)})
    p, k = 4, 2
    per_rank = [list(PKBatchSampler(labels, p, k, seed=0, rank=r, world_size=2, steps_per_epoch=5)) for r in (0, 1)]
    for b0, b1 in zip(*per_rank):
        ids0, ids1 = {labels[i] for i in b0}, {labels[i] for i in b1}
        assert len(ids0) == p and len(ids1) == p and not ids0 & ids1
    with pytest.raises(ValueError, match="data.batch_p=5 x world_size=2"):
        PKBatchSampler(labels, 5, k, rank=0, world_size=2)


def test_seeded_batches_reproducible():
    labels = _labels({f"{i:03d}": 3 for i in range(6)})
    make = lambda: SeededBatches(PKBatchSampler(labels, 2, 2, rank=0, world_size=1, steps_per_epoch=3), seed=5)  # noqa: E731
    a, b = make(), make()
    first = list(a)
    assert first == list(b)
    assert all(len({s for _, s in batch}) == len(batch) for batch in first)  # one seed per item
    a.sampler.set_epoch(2)  # the hook Lightning uses
    assert a.batches.epoch == 2 and list(a) != first


@pytest.mark.parametrize(("n", "bs", "world"), [(10, 3, 1), (10, 3, 2), (7, 4, 3), (2, 5, 4)])
def test_inference_batches_cover_once(n, bs, world):
    per_rank = [list(InferenceBatchSampler(n, bs, rank=r, world_size=world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # same number of batches on every rank
    flat = [i for batches in per_rank for b in batches for i in b]
    assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
    assert all(len(b) <= bs for batches in per_rank for b in batches)
    if world == 1:
        assert flat == list(range(n))


# ------------------------------------------------------------------------------------------- datamodule
def _module(root: Path, **kw) -> GaitDataModule:
    return GaitDataModule(root=str(root), **kw)


@pytest.mark.parametrize("mode", ["fixed_unordered", "fixed_ordered"])
def test_datamodule_end_to_end(tmp_path, mode):
    train_ids, test_ids = ["001", "002", "003", "004"], ["005", "006"]
    write_corpus(tmp_path, ids=train_ids + test_ids, size=(64, 64), partition=(train_ids, test_ids))
    p, k, frames = 3, 2, 9
    dm = _module(
        tmp_path,
        batch_p=p,
        batch_k=k,
        train_frames=frames,
        train_sample=mode,
        frames_skip=2,
        eval_batch_size=4,
        eval_frames_limit=10,
        steps_per_epoch=3,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == len(train_ids)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for batch in batches:
        assert batch["sils"].shape == (p * k, frames, 64, 44) and batch["sils"].dtype == torch.float32
        assert 0 <= batch["sils"].min() and batch["sils"].max() <= 1
        assert batch["labels"].dtype == torch.int64 and batch["labels"].shape == (p * k,)
        assert batch["labels"].min() >= 0 and batch["labels"].max() < dm.num_classes
        # labels are indices into the sorted train ids, consistent with the dataset's label strings
        names = [dm.train_set.labels[i] for i in batch["index"].tolist()]
        assert [sorted(train_ids)[c] for c in batch["labels"].tolist()] == names
    again = next(iter(dm.train_dataloader()))  # reproducible frame draws
    assert torch.equal(again["sils"], batches[0]["sils"]) and torch.equal(again["index"], batches[0]["index"])

    test = dm.test_set
    seen: list[int] = []
    for batch in dm.test_dataloader():
        lengths = [min(len(test[i]), 10) for i in batch["index"].tolist()]
        assert batch["seqL"].tolist() == lengths
        assert batch["sils"].shape == (1, sum(lengths), 64, 44)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(test))) and len(seen) == len(test)
    assert dm.test_meta["labels"] == test.labels and set(test.labels) == set(test_ids)


def test_datamodule_workers_match_single_process(tmp_path):
    ids = ["001", "002", "003", "004"]
    write_corpus(tmp_path, ids=ids, partition=(ids[:3], ids[3:]))
    batches = []
    for workers in (0, 2):
        dm = _module(tmp_path, batch_p=2, batch_k=2, train_frames=5, steps_per_epoch=2, num_workers=workers)
        dm.setup("fit")
        batches.append([b["sils"] for b in dm.train_dataloader()])
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_datamodule_errors(tmp_path):
    ids = ["001", "002", "003"]
    write_corpus(tmp_path, ids=ids)
    with pytest.raises(GaitDataError, match="data.partition"):
        _module(tmp_path).setup("fit")
    (tmp_path / "partition.json").write_text(json.dumps({"TRAIN_SET": ids[:2], "TEST_SET": ids[2:]}))
    with pytest.raises(GaitDataError, match="data.batch_p=5"):
        _module(tmp_path, batch_p=5).setup("fit")
    write_pkl(tmp_path / "003" / "nm-01" / "000" / "000.pkl", np.zeros((0, 64, 44), np.uint8))
    with pytest.raises(GaitDataError, match="empty sequence") as err:
        _module(tmp_path, batch_p=2).setup("fit")
    assert "003" in str(err.value)
    with pytest.raises(GaitDataError, match="data=synthetic"):
        _module(tmp_path / "missing", partition=str(tmp_path / "partition.json")).setup("fit")


def test_datamodule_synthetic_root(tmp_path, monkeypatch):
    real = write_corpus(tmp_path / "gen", ids=["001", "002", "003"], partition=(["001", "002"], ["003"]))
    calls = []
    fake = ModuleType("gaitkd.data.synthetic")
    fake.ensure_synthetic = lambda **kw: calls.append(kw) or real
    monkeypatch.setitem(sys.modules, "gaitkd.data.synthetic", fake)
    dm = GaitDataModule(synthetic={"cache_dir": str(tmp_path / "cache")}, batch_p=2, batch_k=2, train_frames=8)
    dm.prepare_data()
    dm.setup("fit")
    assert calls and calls[0]["cache_dir"] == str(tmp_path / "cache")
    assert dm.num_classes == 2 and set(dm.test_meta["labels"]) == {"003"}


def test_lightning_reaches_set_epoch(tmp_path):
    """Lightning calls set_epoch on ``batch_sampler.sampler`` only; the epochs must differ in their batches."""
    import lightning as L

    ids = ["001", "002", "003", "004"]
    write_corpus(tmp_path, ids=ids, partition=(ids[:3], ids[3:]))

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list[list[int]]] = {}

        def training_step(self, batch, _):
            self.seen.setdefault(self.current_epoch, []).append(batch["index"].tolist())
            return (self.w * batch["sils"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _module(tmp_path, batch_p=2, batch_k=2, train_frames=3, steps_per_epoch=2)
    model = Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    assert trainer.train_dataloader.batch_sampler.batches.epoch == 1
    assert sorted(model.seen) == [0, 1] and model.seen[0] != model.seen[1]
