"""Seed layout, label declarations per folder, file aliases and the patch dataset (tiny temporary NIfTI files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainparc.train.data import (
    PatchDataset,
    crop_pad,
    find_file,
    folder_declaration,
    read_file_list,
    seed_worker,
    select_role,
    window_start,
)
from brainparc.train.labelsets import IGNORE
from brainparc.train.synth import SynthParams
from tests.conftest import SHARED_DATA, needs_shared_data
from tests.train.conftest import PATCH as P
from tests.train.conftest import phantom_labels, save_nifti

torch.set_num_threads(1)


def test_file_list_and_folds(layout: Path):
    entries = read_file_list(layout)
    assert [e.fold for e in entries] == [3, 3, 2, 3, 3, 1]
    assert len(select_role(entries, "train")) == 4
    assert len(select_role(entries, "val")) == 1 and len(select_role(entries, "test")) == 1
    assert len(select_role(entries, "train", {"train": (2, 3)})) == 5
    assert len(PatchDataset(layout, "train", patch_size=P)) == 4
    assert len(PatchDataset(layout, "val", patch_size=P)) == 1


def test_aliases_and_declarations(layout: Path):
    assert find_file(layout / "data" / "HCP" / "s1", "edge").name == "brain_sober.nii.gz"
    assert find_file(layout / "data" / "HCP" / "s2", "edge") is None
    decl, label_file = folder_declaration(layout / "data" / "MB")
    assert decl.name == "dkt31_aseg" and label_file is None
    assert folder_declaration(layout / "data" / "HCP")[0].name == "full"
    assert folder_declaration(layout / "data" / "SS")[1] == "labels.nii.gz"


def test_real_patches_shapes_and_targets(layout: Path):
    ds = PatchDataset(layout, "train", patch_size=P, synth_ratio=0.0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (2, P, P, P) and item["image"].dtype == torch.float32
        assert item["target"].shape == (P, P, P) and item["target"].dtype == torch.int64
    mb = ds[2]  # the 10x12x9 Mindboggle-like subject: padded, WM (0 inside the brain) ignored
    assert mb["subject"] == "MB/m0" and not mb["synthetic"]
    t = mb["target"]
    assert (t == IGNORE).any() and (t == 1).any() and (t == 0).any()  # whole volume inside the window
    ss = ds[3]  # label-only: always synthetic
    assert ss["synthetic"] and ss["image"].shape == (2, P, P, P)


def test_edge_computed_when_missing(layout: Path):
    ds = PatchDataset(layout, "val", patch_size=P)
    vol = ds.load_subject(0)
    assert vol["edge"] == "missing"
    item = ds[0]
    assert item["image"][1].abs().sum() > 0 and torch.isfinite(item["image"]).all()


def test_seeding_and_synth_mixing(layout: Path):
    ds = PatchDataset(layout, "train", patch_size=P, synth_ratio=0.5, seed=1)
    a, b = ds[0], ds[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    flags = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        flags.append(ds[0]["synthetic"])
    assert any(flags) and not all(flags)
    other_rank = PatchDataset(layout, "train", patch_size=P, synth_ratio=0.5, seed=1, rank=1)
    other_rank.set_epoch(11)
    assert not torch.equal(other_rank[0]["image"], ds[0]["image"])
    seed_worker(0)


def test_synthetic_parc_patch_gives_unlabelled_brain_the_white_matter_group(layout: Path):
    ds = PatchDataset(layout, "train", patch_size=P, synth_ratio=1.0, seed=3)
    item = ds[2]  # Mindboggle-like: the unlabelled brain is the WM group, with its own intensity
    assert item["synthetic"]
    t, img = item["target"], item["image"][0]
    wm = [g for g in torch.unique(t).tolist() if g >= 0 and ds.registry.tissue_of_group[g] == 3]
    assert wm and float(img[t == wm[0]].mean()) != pytest.approx(float(img[t == 0].mean()), abs=1e-3)


def test_augmented_real_patch(layout: Path):
    ds = PatchDataset(layout, "train", patch_size=P, augment=SynthParams(nonlin_std=1.0), seed=2)
    item = ds[0]
    assert item["image"].shape == (2, P, P, P)
    assert set(torch.unique(item["target"]).tolist()) <= {IGNORE, 0, 1, 91}


def test_strip_task(tmp_path: Path):
    d = tmp_path / "data" / "AS" / "a0"
    head = phantom_labels((20, 20, 20), 2, 1).astype(np.float32) * 40
    save_nifti(head, d / "pseudo_brain.nii.gz")
    save_nifti((phantom_labels((20, 20, 20), 1, 0) > 0).astype(np.float32), d / "skull_strip.nii.gz")
    (tmp_path / "csvfile").mkdir()
    (tmp_path / "csvfile" / "file_list.csv").write_text("IDs, folder, fold\na0, AS, 3\n")
    ds = PatchDataset(tmp_path, "train", task="strip", patch_size=P)
    item = ds[0]
    assert item["image"].shape == (1, P, P, P)
    assert set(torch.unique(item["target"]).tolist()) <= {IGNORE, 0, 1} and (item["target"] == 1).any()


def test_window_helpers():
    assert window_start([5, 50, 0], [10, 100, 200], 16, 4) == [-3, 42, -4]
    assert window_start([0, 99, 100], [8, 100, 200], 16, 0) == [-8, 84, 92]
    vol = torch.arange(27).reshape(3, 3, 3)
    out = crop_pad(vol, [-1, 0, 2], 3, fill=-5)
    assert out[0].eq(-5).all() and out[1, 0, 0] == vol[0, 0, 2] and out[1, 0, 1] == -5


@needs_shared_data
def test_mindboggle_smoke(tmp_path: Path):
    """One real Mindboggle atlas in the seed layout: DKT31+aseg targets, cerebral WM a group, real and synthetic."""
    atlas = SHARED_DATA / "mindboggle" / "atlas_1"
    d = tmp_path / "data" / "MB" / "atlas_1"
    d.mkdir(parents=True)
    (d / "brain.nii.gz").symlink_to(atlas / "t1weighted_brain.nii.gz")
    (d / "brain_edge.nii.gz").symlink_to(atlas / "t1weighted_brain.nii.gz")  # any grid-matched file (smoke test)
    (d / "dk-struct.nii.gz").symlink_to(atlas / "atlas_1_labels.nii.gz")
    (tmp_path / "data" / "MB" / "labels.json").write_text(json.dumps({"declaration": "dkt31_aseg"}))
    (tmp_path / "csvfile").mkdir()
    (tmp_path / "csvfile" / "file_list.csv").write_text("IDs,folder,fold\natlas_1,MB,3\n")
    ds = PatchDataset(tmp_path, "train", patch_size=48, foreground_prob=1.0, seed=0)
    vol = ds.load_subject(0)
    wm = (np.rint(vol["labels"]) == 0) & vol["brain"]
    outside = (np.rint(vol["labels"]) == 0) & ~vol["brain"]
    assert np.all(ds.registry.tissue_of_group[vol["targets"][wm]] == 3) and np.all(vol["targets"][outside] == 0)
    real = ds[0]
    assert not real["synthetic"] and real["image"].shape == (2, 48, 48, 48)
    ds.synth_ratio = 1.0
    ds.set_epoch(1)
    synth = ds[0]
    assert synth["synthetic"] and synth["image"].shape == (2, 48, 48, 48)
    for item in (real, synth):
        t = item["target"]
        assert (t > 0).any() and (ds.registry.tissue_of_group[t[t >= 0].numpy()] == 3).any()  # WM and parcels


def test_fully_labelled_fractions(layout: Path):
    from brainparc.train.data import fully_labelled_fractions

    ds = PatchDataset(layout, "train", patch_size=P)
    f = fully_labelled_fractions(ds)  # only the two HCP subjects (full declaration) count
    assert f.shape == (107,) and f.sum() == pytest.approx(1.0)
    assert f[1] > 0 and f[91] > 0 and f[5] == 0


def test_tissue_file_only_subject(tmp_path: Path):
    d = tmp_path / "data" / "TIS" / "x0"
    tissue = phantom_labels((20, 20, 20), inner=3, outer=2)
    save_nifti(tissue.astype(np.float32), d / "tissue.nii.gz")
    save_nifti((tissue > 0) * 60.0, d / "brain.nii.gz")
    save_nifti(np.ones((20, 20, 20), np.int16), d / "brain_edge.nii.gz")
    (tmp_path / "csvfile").mkdir()
    (tmp_path / "csvfile" / "file_list.csv").write_text("IDs,folder,fold\nx0,TIS,3\n")
    ds = PatchDataset(tmp_path, "train", patch_size=P)
    vol = ds.load_subject(0)
    assert vol["compiled"].declaration.name == "tissue_only"
    wm_group = ds.registry.groups[int(vol["targets"][10, 10, 10])]
    assert 91 in wm_group and 92 in wm_group and 1 not in wm_group  # WM parcels, not "Left Precentral"
    assert ds.registry.tissue_targets(vol["targets"])[10, 10, 10] == 3


def test_window_without_brain_normalises_to_zeros():
    """A background draw (no brain voxel in the augmented window) is all zeros, not a crash (killed a CPU run)."""
    from brainparc.train.data import _normalise

    out = _normalise(np.full((4, 4, 4), 7.0, np.float32), "in-mask-zscore", np.zeros((4, 4, 4), bool))
    assert out.dtype == np.float32 and not out.any()


@pytest.mark.parametrize("synth_ratio", [0.0, 1.0])
def test_template_coordinates_follow_the_patch_deformation(layout: Path, synth_ratio: float):
    """Coordinates are warped with the labels' own grid, real or synthetic: coordinate → source label → target."""
    entries = select_role(read_file_list(layout), "train")
    for e in entries:  # coordinates = the voxel's own index, so a warped coordinate names its source voxel
        shape = nib_shape(e.path)
        save_nifti(np.stack(np.indices(shape), -1).astype(np.float32), e.path / "coords.nii.gz")
    augment = SynthParams(nonlin_std=1.5, rotation_deg=20.0)
    ds = PatchDataset(layout, "train", patch_size=P, synth_ratio=synth_ratio, augment=augment, coords=True, seed=5)
    for index in range(len(ds)):
        item = ds[index]
        assert item["image"].shape == (5, P, P, P)
        targets = ds.load_subject(index)["targets"]
        xyz = item["image"][2:].numpy()
        inside = np.all([(c >= 0.5) & (c <= n - 1.5) for c, n in zip(xyz, targets.shape, strict=True)], axis=0)
        assert inside.sum() > 100
        src = tuple(np.rint(c[inside]).astype(int) for c in xyz)
        agree = (targets[src] == item["target"].numpy()[inside]).mean()
        assert agree > 0.99, (index, item["synthetic"], agree)


def nib_shape(subject: Path) -> tuple[int, int, int]:
    import nibabel as nib

    return nib.load(find_file(subject, "parc") or subject / "labels.nii.gz").shape[:3]


@pytest.mark.parametrize("synth_ratio", [0.0, 1.0])
def test_coordinate_noise_displaces_only_the_coordinates_smoothly(layout: Path, synth_ratio: float):
    """``coord_noise``: image and target as without it; the coordinates moved by a smooth field of a few voxels."""
    for e in select_role(read_file_list(layout), "train"):
        save_nifti(np.stack(np.indices(nib_shape(e.path)), -1).astype(np.float32), e.path / "coords.nii.gz")
    kw = dict(patch_size=P, synth_ratio=synth_ratio, augment=SynthParams(nonlin_std=1.5), coords=True, seed=5)
    clean, noisy = PatchDataset(layout, "train", **kw), PatchDataset(layout, "train", coord_noise=2.0, **kw)
    moved = []
    for index in range(len(clean)):
        a, b = clean[index], noisy[index]
        assert torch.equal(a["image"][:2], b["image"][:2]) and torch.equal(a["target"], b["target"])
        outside = ((a["image"][2:] < -1) | (b["image"][2:] < -1)).any(0).float()
        # 2 voxels off the volume's edge: there trilinear sampling blends in OUTSIDE_TEMPLATE
        inside = torch.nn.functional.max_pool3d(outside[None, None], 5, 1, 2)[0, 0] == 0
        d = (b["image"][2:] - a["image"][2:])[:, 1:-1, 1:-1, 1:-1]
        inner = inside[1:-1, 1:-1, 1:-1]
        if inner.sum() < 100:  # a synthetic draw mostly off the label map
            continue
        assert d[:, inner].abs().max() < 10.0  # std ≤ 2 voxels per axis
        assert d.diff(dim=1)[:, inner[1:]].abs().max() < 1.0  # smooth: < 1 voxel between neighbours
        moved.append(float(d[:, inner].abs().mean()))
    assert max(moved) > 0.1


def test_coordinate_noise_refuses_unaugmented_real_patches(layout: Path):
    """Real patches are cropped, not resampled, without augmentation: the noise would silently not apply."""
    with pytest.raises(ValueError, match="augment"):
        PatchDataset(layout, "train", patch_size=P, coords=True, coord_noise=2.0)
