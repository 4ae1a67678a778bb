"""`data.on_error`: the datamodule checks the data in use at setup, then raises (before any training) or skips
the broken sequences with one counted warning."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import gaitkd.data.dataset as dataset_module
from gaitkd.data import GaitDataError, GaitDataModule, GaitDataWarning, cut_width
from gaitkd.run import CONF_DIR, build

TRAIN_IDS, TEST_IDS = ["001", "002", "003", "004"], ["005", "006"]
TYPES, VIEWS = ("nm-01", "nm-02"), ("000", "090")
TRAIN_FRAMES = 4
# sequence -> (what is wrong with its pkl, check kind that flags it)
BROKEN = {
    "001/nm-01/000": (b"\x80\x04 truncated garbage", "unreadable_pkl"),
    "002/nm-02/090": (pickle.dumps(np.zeros((5, 64, 64), np.float32)), "wrong_dtype"),
    "005/nm-01/090": (pickle.dumps(np.zeros((0, 64, 64), np.uint8)), "empty_sequence"),
}


def write_corpus(root: Path, broken: bool) -> Path:
    """``root/<id>/<type>/<view>/<view>.pkl`` uint8 ``[T, 64, 64]`` plus partition.json; ``BROKEN`` if asked."""
    rng = np.random.default_rng(0)
    for sid in TRAIN_IDS + TEST_IDS:
        for typ in TYPES:
            for view in VIEWS:
                folder = root / sid / typ / view
                folder.mkdir(parents=True)
                arr = rng.integers(0, 256, (int(rng.integers(6, 10)), 64, 64), dtype=np.uint8)
                (folder / f"{view}.pkl").write_bytes(pickle.dumps(arr))
    if broken:
        for rel, (payload, _) in BROKEN.items():
            (root / rel / f"{rel.rsplit('/', 1)[1]}.pkl").write_bytes(payload)
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": TRAIN_IDS, "TEST_SET": TEST_IDS}))
    return root


def _module(root: Path, **kw) -> GaitDataModule:
    return GaitDataModule(root=str(root), batch_p=2, batch_k=2, train_frames=TRAIN_FRAMES, steps_per_epoch=2, **kw)


def _keys(dataset) -> set[str]:
    return {"/".join(k) for k in zip(dataset.labels, dataset.types, dataset.views)}


@pytest.mark.parametrize("cache", [False, True])
def test_raise_mode_stops_at_setup_naming_every_file(tmp_path, cache):
    root = write_corpus(tmp_path / "data", broken=True)
    dm = _module(root, cache=cache)
    with pytest.raises(GaitDataError, match="dataset check failed") as err:
        dm.setup("fit")
    message = str(err.value)
    for rel, (_, kind) in BROKEN.items():
        assert kind in message and f"{rel}/{rel.rsplit('/', 1)[1]}.pkl" in message
    assert "data.on_error=skip" in message and dm.train_set is None  # nothing half set up


def test_skip_mode_trains_without_the_broken_sequences(tmp_path):
    root = write_corpus(tmp_path / "data", broken=True)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[
            "data=casia_b", f"data.root={root}", "data.on_error=skip", "data.batch_p=2", "data.batch_k=2",
            "data.train_frames=4", "data.steps_per_epoch=2", "data.num_workers=0", "student=gaitset_small",
            "trainer.max_steps=2", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "logger=none",
            "callbacks=none", "test=false", f"paths.output_dir={tmp_path / 'out'}",
        ])
    with pytest.warns(GaitDataWarning, match="skip leaves out") as record:
        built = build(cfg)
    dm = built.datamodule
    assert dm.skipped_sequences == len(BROKEN)
    skip_warnings = [str(w.message) for w in record if "skip leaves out" in str(w.message)]
    assert len(skip_warnings) == 1  # a single warning, with the count per kind
    for _, kind in BROKEN.values():
        assert f"{kind}: 1" in skip_warnings[0]
    assert f"leaves out {len(BROKEN)} of" in skip_warnings[0]
    total = len(TRAIN_IDS + TEST_IDS) * len(TYPES) * len(VIEWS)
    assert len(dm.train_set) + len(dm.test_set) == total - len(BROKEN)
    assert not (_keys(dm.train_set) | _keys(dm.test_set)) & set(BROKEN)
    assert dm.test_meta["labels"] == dm.test_set.labels
    built.trainer.fit(built.module, datamodule=dm)
    assert built.trainer.global_step == cfg.trainer.max_steps
    for module_param in built.module.student.parameters():
        assert torch.isfinite(module_param).all()
    seen = [i for batch in dm.test_dataloader() for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(len(dm.test_set)))  # evaluation reads every kept sequence without error


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_clean_corpus_skips_nothing(tmp_path, on_error):
    root = write_corpus(tmp_path / "data", broken=False)
    dm = _module(root, on_error=on_error)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GaitDataWarning)  # a clean corpus warns about nothing
        dm.setup("fit")
    assert dm.skipped_sequences == 0
    assert len(dm.train_set) == len(TRAIN_IDS) * len(TYPES) * len(VIEWS)
    assert len(dm.test_set) == len(TEST_IDS) * len(TYPES) * len(VIEWS)


def test_cache_reuses_the_arrays_the_check_decoded(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "data", broken=True)
    dm = _module(root, cache=True, on_error="skip")
    with pytest.warns(GaitDataWarning, match="skip leaves out"):
        dm.setup("fit")

    def no_second_decode(path):
        raise AssertionError(f"{path} decoded again after setup")

    monkeypatch.setattr(dataset_module, "load_pkl", no_second_decode)
    for dataset in (dm.train_set, dm.test_set):
        for i, paths in enumerate(dataset.paths):
            with open(paths[0], "rb") as handle:
                expected = cut_width(pickle.load(handle))
            assert np.array_equal(dataset[i], expected)
    batch = next(iter(dm.train_dataloader()))
    assert batch["sils"].shape[:2] == (dm.batch_p * dm.batch_k, TRAIN_FRAMES)


def test_skip_mode_still_raises_on_errors_outside_sequences(tmp_path):
    root = write_corpus(tmp_path / "data", broken=True)
    misplaced = root / TRAIN_IDS[0] / "stray.pkl"
    misplaced.write_bytes(pickle.dumps(np.zeros((3, 64, 64), np.uint8)))
    with pytest.raises(GaitDataError, match="misplaced_pkl") as err:
        _module(root, on_error="skip").setup("fit")
    assert f"{TRAIN_IDS[0]}/stray.pkl" in str(err.value)


def test_skip_mode_refuses_an_emptied_set(tmp_path):
    root = write_corpus(tmp_path / "data", broken=False)
    for sid in TEST_IDS:  # break the whole test set
        for pkl in root.glob(f"{sid}/*/*/*.pkl"):
            pkl.write_bytes(b"garbage")
    with pytest.raises(GaitDataError, match="every sequence of TEST_SET"):
        with pytest.warns(GaitDataWarning):
            _module(root, on_error="skip").setup("fit")


def test_unknown_on_error_value():
    with pytest.raises(ValueError, match="data.on_error"):
        GaitDataModule(root="anything", on_error="ignore")
