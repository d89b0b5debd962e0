"""Fixtures of the training tests: a tiny seed layout with NIfTI files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainparc.train.targets import centre_crop

PATCH = 16
VALID = 8


def save_nifti(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr), np.eye(4)), str(path))


def phantom_labels(shape, inner, outer):
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(x**2 for x in g))
    lab = np.zeros(shape, np.int32)
    lab[r < 0.9] = outer
    lab[r < 0.5] = inner
    return lab


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return make_layout(tmp_path)


def make_layout(tmp_path: Path) -> Path:
    """The seed layout of the ``layout`` fixture under ``tmp_path`` (HCP full labels, MB DKT31, SS label-only)."""
    rows = ["IDs,folder,fold"]
    # BrainParc-style subjects (full labels); one uses the brain_sober alias, one has no edge file at all
    for i, (fold, edge_name) in enumerate([(3, "brain_edge.nii.gz"), (3, "brain_sober.nii.gz"), (2, None)]):
        d = tmp_path / "data" / "HCP" / f"s{i}"
        lab = phantom_labels((20, 22, 18), inner=91, outer=1)  # WM inside cortex
        save_nifti(lab.astype(np.float32), d / "dk-struct.nii.gz")
        save_nifti((lab > 0) * (100.0 + 50 * (lab == 91)), d / "brain.nii.gz")
        if edge_name:
            save_nifti(np.full(lab.shape, 7, np.int16), d / edge_name)
        rows.append(f"s{i},HCP,{fold}")
    # Mindboggle-style folder: FreeSurfer ids, no WM label, a declaration file; a volume smaller than the patch
    d = tmp_path / "data" / "MB" / "m0"
    lab = phantom_labels((10, 12, 9), inner=0, outer=1024)
    save_nifti(lab.astype(np.float32), d / "dk-struct.nii.gz")
    save_nifti((phantom_labels((10, 12, 9), 1, 1) > 0) * 80.0, d / "brain.nii.gz")
    (tmp_path / "data" / "MB" / "labels.json").write_text(json.dumps({"declaration": "dkt31_aseg"}))
    rows.append("m0,MB,3")
    # label-only whole-head maps (always synthesised), declared with a label_file
    d = tmp_path / "data" / "SS" / "h0"
    save_nifti(phantom_labels((20, 20, 20), inner=2, outer=3).astype(np.int32) + 0, d / "labels.nii.gz")
    (tmp_path / "data" / "SS" / "labels.json").write_text(
        json.dumps({"declaration": "aseg", "label_file": "labels.nii.gz"})
    )
    rows.append("h0,SS,3")
    rows.append("t0,HCP,1")  # a test subject (not created: never loaded)
    (tmp_path / "csvfile").mkdir()
    (tmp_path / "csvfile" / "file_list.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


class StubCascade(torch.nn.Module):
    """Six outputs shaped like the BrainParc cascade's (boundary/tissue/parcel × small/big) from one conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 4 + 4 + 107, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(x)
        small, big = centre_crop(y, VALID), F.interpolate(y, size=(VALID,) * 3, mode="trilinear", align_corners=False)
        out = []
        for branch in (small, big):
            out.append(
                (torch.sigmoid(branch[:, :4]), torch.softmax(branch[:, 4:8], 1), torch.softmax(branch[:, 8:], 1))
            )
        (bs, ts, ps), (bb, tb, pb) = out
        return bs, bb, ts, tb, ps, pb


def make_full_layout(root: Path, n_train: int = 8, n_val: int = 1, shape=(24, 26, 22), folder: str = "HCP") -> Path:
    """A seed layout of fully labelled phantoms (WM core, cortex shell, CSF rim) with brain images, no edge files."""
    rows = ["IDs,folder,fold"]
    rng = np.random.default_rng(0)
    for i in range(n_train + n_val):
        d = root / "data" / folder / f"s{i}"
        g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        r = np.sqrt(sum(x**2 for x in g))
        # WM core (91/92 by side), precentral cortex (1/2 by side), CSF rim (100)
        left = g[0] < 0
        lab = np.select([r < 0.45, r < 0.75, r < 0.9], [np.where(left, 91, 92), np.where(left, 1, 2), 100], 0)
        save_nifti(lab.astype(np.int16), d / "dk-struct.nii.gz")
        img = (lab > 0) * (100.0 + 50 * (lab >= 91) * (lab < 100) - 60 * (lab == 100) + rng.normal(0, 2, shape))
        save_nifti(img.astype(np.float32), d / "brain.nii.gz")
        rows.append(f"s{i},{folder},{3 if i < n_train else 2}")
    (root / "csvfile").mkdir(parents=True, exist_ok=True)
    (root / "csvfile" / "file_list.csv").write_text("\n".join(rows) + "\n")
    return root
