"""``data.modalities`` (OpenGait's ``data_in_use``) on folders with two pkls per sequence: selection by name, index
and mask, extra modalities sampled with the silhouettes' frame indices, the setup check honouring the selection,
and bad selectors failing once, clearly, before training."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import gaitkd.data.dataset as dataset_module
from gaitkd.cli import main
from gaitkd.data import GaitDataError, GaitDataModule, GaitSequenceDataset
from gaitkd.data.check import check_dataset
from gaitkd.run import CONF_DIR, build, train

IDS, TRAIN = ("001", "002", "003", "004", "005"), 3
JOINTS = 17


def _frames(t: int, second: str) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``j`` of both pkls encodes ``j + 1``: silhouettes uint8 ``[T, 64, 64]``; the second pkl is a pose
    float32 ``[T, 17, 3]`` or a silhouette-like uint8 ``[T, 64, 64]`` holding ``255 - (j + 1)``."""
    code = np.arange(1, t + 1)
    sils = np.broadcast_to(code[:, None, None], (t, 64, 64)).astype(np.uint8)
    if second == "pose":
        return sils, np.broadcast_to(code[:, None, None], (t, JOINTS, 3)).astype(np.float32)
    return sils, (255 - sils).astype(np.uint8)


def write_corpus(root: Path, second: str = "pose", mismatch: str | None = None) -> Path:
    """``root/<id>/<type>/<view>/{sils.pkl, <second>.pkl}`` (``pose.pkl`` sorts first) + partition.json.

    ``mismatch``: one ``"<id>/<type>/<view>"`` whose second pkl has one frame more.
    """
    for n, sid in enumerate(IDS):
        for typ in ("nm-01", "nm-05"):  # CASIA-B gallery / probe types
            for view in ("000", "090"):
                folder = root / sid / typ / view
                folder.mkdir(parents=True)
                sils, other = _frames(8 + (n % 3) * 3, second)
                if f"{sid}/{typ}/{view}" == mismatch:
                    other = np.concatenate([other, other[:1]])
                (folder / "sils.pkl").write_bytes(pickle.dumps(sils))
                (folder / f"{second}.pkl").write_bytes(pickle.dumps(other))
    (root / "partition.json").write_text(json.dumps({"TRAIN_SET": list(IDS[:TRAIN]), "TEST_SET": list(IDS[TRAIN:])}))
    return root


def _dm(root: Path, modalities, **kw) -> GaitDataModule:
    dm = GaitDataModule(root=str(root), batch_p=2, batch_k=2, train_frames=5, steps_per_epoch=2, eval_batch_size=3,
                        modalities=modalities, **kw)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------------------------- selection
@pytest.mark.parametrize("selection", [["sils.pkl"], ["sils"], "sils", [1], [-1], [False, True]])
def test_selecting_the_silhouettes_of_a_sils_pose_folder(tmp_path, selection):
    dm = _dm(write_corpus(tmp_path), selection)
    assert all(len(p) == 1 and p[0].endswith("sils.pkl") for p in dm.train_set.paths + dm.test_set.paths)
    batch = next(iter(dm.train_dataloader()))
    assert "extra" not in batch and batch["sils"].shape == (4, 5, 64, 44)
    codes = (batch["sils"] * 255).round()
    assert (codes >= 1).all() and torch.equal(codes, codes[..., :1, :1].expand_as(codes))  # silhouette frames


def test_extra_modality_uses_the_same_frames_train_and_eval(tmp_path):
    dm = _dm(write_corpus(tmp_path), ["sils", "pose.pkl"], train_sample="fixed_ordered")
    assert [Path(p).name for p in dm.train_set.paths[0]] == ["sils.pkl", "pose.pkl"]
    for batch in dm.train_dataloader():
        (pose,) = batch["extra"]
        assert pose.dtype == torch.float32 and pose.shape == (4, 5, JOINTS, 3)
        assert torch.equal(pose[..., 0, 0], (batch["sils"][..., 0, 0] * 255).round())  # frame j <-> frame j
    for batch in dm.test_dataloader():
        (pose,) = batch["extra"]
        assert pose.shape == (1, int(batch["seqL"].sum()), JOINTS, 3)
        assert torch.equal(pose[0, :, 0, 0], (batch["sils"][0, :, 0, 0] * 255).round())


@pytest.mark.parametrize(("selection", "first"), [(["sils", "parsing"], "sils"), ([0, 1], "parsing"),
                                                  (["parsing.pkl", "sils.pkl"], "parsing"), ([1, 0], "sils")])
def test_both_orders_of_two_silhouette_like_modalities(tmp_path, selection, first):
    """``sils`` is the first selected pkl whatever the order; the extra is width-cut like it, dtype kept; packed
    (unfixed) batches pack the extra along time with the same seqL."""
    dm = _dm(write_corpus(tmp_path, second="parsing"), selection, train_sample="unfixed_unordered",
             train_frames_min=2, train_frames_max=6)
    batch = next(iter(dm.train_dataloader()))
    (extra,) = batch["extra"]
    total = int(batch["seqL"].sum())
    assert batch["sils"].shape == extra.shape == (1, total, 64, 44) and extra.dtype == torch.uint8
    sils = (batch["sils"] * 255).round().to(torch.uint8)
    assert torch.equal(extra, 255 - sils)  # complementary pkls: the same frames of both
    assert bool((sils <= 127).all()) == (first == "sils")  # sils.pkl codes are small, parsing.pkl codes large


def test_cache_holds_every_selected_modality_decoded_once(tmp_path, monkeypatch):
    dm = _dm(write_corpus(tmp_path), ["sils", "pose"], cache=True)

    def no_second_decode(path, silhouette=True):
        raise AssertionError(f"{path} decoded again after setup")

    monkeypatch.setattr(dataset_module, "load_pkl", no_second_decode)
    batch = next(iter(dm.train_dataloader()))
    assert batch["sils"].shape == (4, 5, 64, 44) and batch["extra"][0].shape == (4, 5, JOINTS, 3)


# --------------------------------------------------------------------------------------------- the data check
def test_check_respects_the_selection(tmp_path):
    root = write_corpus(tmp_path)
    report = check_dataset(root, modalities=["sils"])
    assert report.ok and report.pkls == report.sequences == len(IDS) * 4 and report.majority_shape == (64, 64)
    both = check_dataset(root, modalities=["sils", "pose"], keep=True)
    assert both.ok and both.pkls == 2 * both.sequences and len(both.arrays) == both.pkls  # pose checked as an extra
    wrong = check_dataset(root)  # null: every pkl, pose.pkl (sorted first) checked as silhouettes
    assert wrong.counts == {"wrong_dtype": len(IDS) * 4}
    assert all(where.endswith("pose.pkl") for where, _ in wrong.issues["wrong_dtype"].examples)
    with pytest.raises(SystemExit):
        main(["check-data", str(root)])
    main(["check-data", str(root), "--modalities", "1"])  # no SystemExit: sils.pkl alone is clean


def test_unequal_frame_counts_name_the_folder(tmp_path):
    root = write_corpus(tmp_path, mismatch="002/nm-05/090")
    with pytest.raises(GaitDataError, match="frame_count_mismatch") as err:
        _dm(root, ["sils", "pose"])
    assert "002/nm-05/090" in str(err.value)
    assert _dm(root, ["sils"]).skipped_sequences == 0  # the other pkl is not read, so it cannot break anything
    dataset = GaitSequenceDataset(root, ids=["002"], modalities=["sils", "pose"])  # no setup check: load checks
    broken = [i for i, p in enumerate(dataset.paths) if "nm-05/090" in p[0]][0]
    with pytest.raises(GaitDataError, match="different frame counts") as err:
        dataset.load(broken)
    assert str(root / "002" / "nm-05" / "090") in str(err.value)


# ---------------------------------------------------------------------------------------------- bad selectors
def test_null_on_a_sils_pose_folder_says_to_select_the_silhouettes(tmp_path):
    with pytest.raises(GaitDataError, match=r"data.modalities=\[sils.pkl\]") as err:
        _dm(write_corpus(tmp_path), None)
    assert "wrong_dtype" in str(err.value) and "pose.pkl" in str(err.value)


@pytest.mark.parametrize("selection", [["depth"], [2], [True], ["sils", "sils.pkl"]])
def test_selectors_that_match_no_pkl_fail_at_setup(tmp_path, selection):
    with pytest.raises(GaitDataError, match="modality_missing") as err:
        _dm(write_corpus(tmp_path), selection)
    assert "data.modalities" in str(err.value) and "001/nm-01/000" in str(err.value)


@pytest.mark.parametrize("selection", [[], [1.5], [True, 1], [False, False], [0, 0], {"a": 1}, True])
def test_malformed_selectors_fail_naming_the_key(tmp_path, selection):
    with pytest.raises(GaitDataError, match="data.modalities=") as err:
        GaitDataModule(root=str(tmp_path), modalities=selection)
    assert "data_in_use" in str(err.value)


def _cfg(root: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("run", overrides=[
            "data=casia_b", f"data.root={root}", "data.batch_p=2", "data.batch_k=2", "data.train_frames=4",
            "data.eval_frames_limit=6", "data.num_workers=0", "student=gaitset_small", "trainer.max_steps=2",
            "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "logger=none", "callbacks=none",
            "evaluation.heatmap=false", f"paths.output_dir={out}", *overrides,
        ])


@pytest.mark.parametrize("selection", ["[sils.pkl]", "[sils,pose]"])
def test_end_to_end_run_on_a_sils_pose_folder(tmp_path, selection):
    cfg = _cfg(write_corpus(tmp_path / "data"), tmp_path / "out", f"data.modalities={selection}")
    metrics = train(cfg)
    assert 0.0 <= metrics["NM@R1"] <= 100.0


def test_bad_selector_stops_the_run_before_training(tmp_path):
    cfg = _cfg(write_corpus(tmp_path / "data"), tmp_path / "out", "data.modalities=[depth]")
    with pytest.raises(GaitDataError, match="modality_missing"):
        build(cfg)
    assert not (tmp_path / "out" / "checkpoints").exists()
