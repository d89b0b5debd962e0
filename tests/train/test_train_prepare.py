"""``brainparc train prepare`` (BIDS + aparc+aseg → seed layout) and ``train strip`` on its output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from brainparc.train.cli import main
from brainparc.train.data import PatchDataset, folder_declaration, fully_labelled_fractions
from brainparc.train.prepare import find_label_map

torch.set_num_threads(1)
SHAPE = (36, 38, 34)


def _head_and_labels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    r = np.sqrt(sum(x**2 for x in g))
    left = g[0] < 0  # RAS: i increases to the right, so negative x is left
    lab = np.select(
        [r < 0.3, r < 0.5, r < 0.6, r < 0.65],
        [np.where(left, 2, 41), np.where(left, 1024, 2024), 24, np.where(left & (g[2] > 0.55), 3, 1000)],
        0,
    ).astype(np.int16)
    rng = np.random.default_rng(seed)
    head = np.select([lab == 24, lab > 0, r < 0.9], [30.0, 80.0 + 40 * np.isin(lab, (2, 41)), 60.0], 0.0)
    return (head + rng.normal(0, 1, SHAPE) * (r < 0.9)).astype(np.float32), lab


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("prepare")
    bids, labels, root = tmp / "ds000" / "bids", tmp / "fs", tmp / "root"
    affine = np.array([[1.0, 0, 0, -18], [0, 1, 0, -19], [0, 0, 1, -17], [0, 0, 0, 1]])
    to_lia = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("LIA"))
    for i, sub in enumerate(["01", "02", "03"]):
        head, lab = _head_and_labels(i)
        ses = "ses-A/" if sub == "03" else ""
        t1 = bids / f"sub-{sub}" / ses / "anat" / f"sub-{sub}{'_ses-A' if ses else ''}_T1w.nii.gz"
        t1.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(head, affine), t1)
        lia = nib.Nifti1Image(apply_orientation(lab, to_lia), affine @ inv_ornt_aff(to_lia, SHAPE))
        ident = f"sub-{sub}_ses-A" if ses else f"sub-{sub}"
        if sub == "01":  # FreeSurfer SUBJECTS_DIR layout
            (labels / ident / "mri").mkdir(parents=True)
            nib.save(
                nib.MGHImage(lia.get_fdata().astype(np.int32), lia.affine), labels / ident / "mri" / "aparc+aseg.mgz"
            )
        else:  # flat files
            labels.mkdir(exist_ok=True)
            nib.save(lia, labels / f"{ident}_aparc+aseg.nii.gz")
    code = main(["train", "prepare", str(bids), str(labels), str(root), "--folder", "DEMO", "--no-n4"])
    assert code == 0
    assert main(["train", "prepare", str(bids), str(labels), str(root), "--folder", "DEMO", "--no-n4",
                 "--val-fraction", "0.34"]) == 0  # fmt: skip  # rerun: rows are replaced, not duplicated
    return root


def test_label_map_naming(tmp_path):
    assert find_label_map(tmp_path, "sub-01") is None
    p = tmp_path / "sub-01" / "anat" / "sub-01_desc-aparcaseg_dseg.nii.gz"
    p.parent.mkdir(parents=True)
    p.touch()
    assert find_label_map(tmp_path, "sub-01") == p


def test_prepare_writes_the_seed_layout(prepared):
    folder = prepared / "data" / "DEMO"
    ids = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert ids == ["sub-01", "sub-02", "sub-03_ses-A"]
    with (prepared / "csvfile" / "file_list.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["IDs"] for r in rows) == ids and sorted(int(r["fold"]) for r in rows) == [2, 3, 3]
    for ident in ids:
        files = {p.name: nib.load(p) for p in (folder / ident).iterdir()}
        assert sorted(files) == [
            "T1w.nii.gz",
            "brain.nii.gz",
            "brain_edge.nii.gz",
            "dk-struct.nii.gz",
            "skull-strip.nii.gz",
        ]
        assert all(aff2axcodes(img.affine) == ("L", "A", "S") for img in files.values())
        lab = np.asarray(files["dk-struct.nii.gz"].dataobj)
        assert set(np.unique(lab).tolist()) == {0, 2, 3, 24, 41, 1000, 1024, 2024}
        # same physical point, same label and intensity as in the inputs (LIA/RAS → LAS without interpolation)
        ijk = np.argwhere(lab == 2024)[0]
        xyz = files["dk-struct.nii.gz"].affine @ np.append(ijk, 1)
        assert xyz[0] > 0  # 2024 is a right-hemisphere label: world x > 0
        brain, head = (np.asarray(files[n].dataobj) for n in ("brain.nii.gz", "T1w.nii.gz"))
        mask = np.asarray(files["skull-strip.nii.gz"].dataobj) > 0
        assert np.array_equal(brain, head * mask) and mask[lab > 0].all()
    decl, _ = folder_declaration(folder)
    assert decl.name == "aparc_aseg" and json.loads((folder / "labels.json").read_text())["declaration"]
    ds = PatchDataset(prepared, "train", patch_size=32)
    item = ds[0]
    t = item["target"]
    assert item["image"].shape == (2, 32, 32, 32) and ((t >= -1) & (t < len(ds.registry))).all()
    assert ds.load_subject(0)["targets"].max() > 106  # 3 (leftover left cortex): a merged group
    f = fully_labelled_fractions(ds)  # aparc+aseg counts as fully labelled (few merged 3/42 voxels)
    assert f[1] > 0 and f[2] > 0 and f[91] > 0 and f[100] > 0 and f.sum() == pytest.approx(1.0)


def test_train_strip_on_prepared_data(prepared, tmp_path):
    out = tmp_path / "strip"
    argv = ["train", "strip", "--data", str(prepared), "--out", str(out), "--preset", "autostrip-tiny"]
    argv += ["--patch-size", "48", "--valid-size", "32", "--iterations", "1", "--num-workers", "0", "--no-progress"]
    assert main([*argv, "--device", "cpu", "--synth-ratio", "0.5"]) == 0
    rows = (out / "validation" / "dice_0001.csv").read_text().splitlines()
    assert rows[0] == "subject,brain,mean_parc" and len(rows) == 3  # one validation subject + mean
    from brainparc import models

    net, card = models.load(out / "model.safetensors")
    assert card["task"] == "strip" and card["preset"] == "autostrip-tiny" and net.valid_size == 32
