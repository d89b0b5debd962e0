"""scripts/build_atlas.py on a tiny training root: Mindboggle-style (dkt31_aseg), BrainParc (full) and fsaverage (aseg)
sources together, as the bundled atlas was built."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.scripts import load_script


def _subject(folder: Path, labels: np.ndarray, x0: float, declaration: str | None) -> None:
    """A 12³ subject at template x = x0..x0+11 mm: labels, a brain image, template coordinates."""
    folder.mkdir(parents=True)
    if declaration is not None:
        (folder.parent / "labels.json").write_text(json.dumps({"declaration": declaration}))
    aff = np.eye(4)
    nib.save(nib.Nifti1Image(labels.astype(np.int16), aff), folder / "dk-struct.nii")
    nib.save(nib.Nifti1Image(np.ones(labels.shape, np.float32), aff), folder / "brain.nii")
    ijk = np.stack(np.indices(labels.shape), -1).astype(np.float32)
    coords = ijk + np.array([x0, -6.0, 0.0], np.float32)
    nib.save(nib.Nifti1Image(coords, aff), folder / "coords.nii")


def test_sources_of_every_declaration_build_and_rebuild_identically(tmp_path):
    """Each source is read with the declaration the bundled atlas used (Mindboggle's unlabelled brain ignored); the
    loop once compiled the newer reading instead and crashed with an IndexError."""
    root = tmp_path / "root"
    (root / "csvfile").mkdir(parents=True)
    (root / "csvfile" / "parc.csv").write_text("IDs,folder,fold\nmb,MB,3\nbp,BP,3\n")
    mb = np.zeros((12, 12, 12))
    mb[:6] = 1028  # left superior frontal; the rest of this brain is unlabelled (white matter in the new reading)
    _subject(root / "data" / "MB" / "mb", mb, -30.0, "dkt31_aseg")
    _subject(root / "data" / "BP" / "bp", np.full((12, 12, 12), 1), 0.0, None)  # BrainParc index 1, full labels
    _subject(root / "data" / "FSA" / "fsaverage", np.full((12, 12, 12), 2), 20.0, "aseg")  # left cerebral WM
    build = load_script("build_atlas")
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    build.build_atlas(root, first)
    build.build_atlas(root, second)
    atlas = np.load(first)
    assert list(atlas["sources"]) == ["MB/mb", "BP/bp", "FSA/fsaverage"]
    assert atlas["prob"].shape[0] == 107
    assert first.read_bytes() == second.read_bytes()
