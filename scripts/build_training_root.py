"""Build the seed-layout training root of the bundled models from ``../shared/data`` (see docs/models.md).

    python scripts/build_training_root.py ../shared/data work/train_root

One root, two file lists (``csvfile/parc.csv``, ``csvfile/strip.csv``); every volume is reoriented to LAS at 1 mm
(the lite presets' grid) with ``brainparc.core.conform.conform`` and cropped to its labels plus a margin:

``MB``     Mindboggle OASIS-TRT atlases 1–12: brain (int16-scaled) + DKT31/aseg labels (``dkt31_aseg``)      parc
``BP``     BrainParc sub001 and sub003 (brain + 106 labels), sub004 (labels only; synthesised)             parc
``SS``     SynthSeg's 20 whole-head label maps (``aseg``; synthesised)                                     parc, strip
``HEADS``  the MB and BP label maps in FreeSurfer ids with synthetic extra-cerebral shells around the brain
           (CSF, skull, scalp of subject-dependent thickness): whole heads of children and infants for ``strip``

Held out (never read here): Mindboggle 13–15 and BrainParc sub005_adult (evaluation), the AutoStrip masks and the
whole-head images (skull-stripping evaluation).  Files are written uncompressed (``.nii``) because the root is
packed with xz for transfer and read on every draw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainparc import labels as label_tables
from brainparc.core.conform import conform
from brainparc.train.prepare import bounding_box

MINDBOGGLE_TRAIN = range(1, 13)
BRAINPARC_TRAIN = ("sub001_infant_infantile", "sub003_infant_adult_like", "sub004_child")
SHELL_IDS = (901, 902, 903)  # extra-cerebral CSF, skull, scalp: unknown to the aseg declaration → background
MARGIN = 12


def _conformed(path: Path, order: int) -> tuple[np.ndarray, np.ndarray]:
    img = conform(nib.load(str(path)), 1.0, crop_to_head=False, order=order)
    data = np.asarray(img.img.dataobj, dtype=np.float32)
    return (np.rint(data).astype(np.int16) if order == 0 else data), img.img.affine


def _shifted(affine: np.ndarray, start: list[int]) -> np.ndarray:
    """Affine of a grid whose voxel 0 is voxel ``start`` of the grid of ``affine`` (a crop, or a pad if negative)."""
    return affine @ np.vstack([np.c_[np.eye(3), start], [0, 0, 0, 1]])


def _cropped(box: tuple[slice, ...], affine: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays`` cut to ``box`` and the affine of the cut grid (last)."""
    return (*(a[box] for a in arrays), _shifted(affine, [s.start for s in box]))


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.set_data_dtype(arr.dtype)
    nib.save(img, str(path))


def _scaled(brain: np.ndarray) -> np.ndarray:
    """Intensities as int16 (0–10000 at the 99.9th percentile): 4× smaller than float32, ample precision."""
    hi = float(np.percentile(brain[brain > 0], 99.9))
    return np.clip(np.rint(brain / hi * 10000), 0, 32000).astype(np.int16)


def _save_head(fs_labels: np.ndarray, brain: np.ndarray, affine: np.ndarray, rng: np.random.Generator, path: Path):
    """``fs_labels`` padded and wrapped in three extra-cerebral shells (``SHELL_IDS``) of random thickness (voxels)."""
    pad = 22  # ≥ the thickest head the draws below allow
    out = np.pad(fs_labels, pad)
    inner = ndimage.binary_fill_holes(np.pad(brain, pad))
    for shell_id, (lo, hi) in zip(SHELL_IDS, ((1, 4), (3, 8), (3, 9)), strict=True):
        outer = ndimage.binary_dilation(inner, iterations=int(rng.integers(lo, hi + 1)))
        out[outer & ~inner] = shell_id
        inner = outer
    _save(out, _shifted(affine, [-pad] * 3), path)


def _write_list(root: Path, name: str, rows: list[tuple[str, str]]) -> None:
    (root / "csvfile").mkdir(parents=True, exist_ok=True)
    text = "IDs,folder,fold\n" + "".join(f"{i},{f},3\n" for i, f in rows)
    (root / "csvfile" / name).write_text(text, encoding="utf-8")


def build(shared: Path, root: Path) -> None:
    """Write the root (module docstring)."""
    rng = np.random.default_rng(0)
    bp_to_fs = np.array([lab.freesurfer_id for lab in label_tables.dk_struct().labels], dtype=np.int16)
    known = np.union1d(bp_to_fs, [3, 42])  # the ids the aseg declaration maps to brain classes
    parc: list[tuple[str, str]] = []
    heads: list[tuple[str, str]] = []
    for folder, decl in (("MB", "dkt31_aseg"), ("SS", "aseg"), ("HEADS", "aseg")):
        (root / "data" / folder).mkdir(parents=True, exist_ok=True)
        (root / "data" / folder / "labels.json").write_text(json.dumps({"declaration": decl}) + "\n")

    for n in MINDBOGGLE_TRAIN:
        src = shared / "mindboggle" / f"atlas_{n}"
        brain, affine = _conformed(src / "t1weighted_brain.nii.gz", 1)
        labs, _ = _conformed(src / f"atlas_{n}_labels.nii.gz", 0)
        brain, labs, aff = _cropped(bounding_box((labs > 0) | (brain > 0), MARGIN), affine, brain, labs)
        labs[brain <= 0] = 0  # labels outside the stripped brain would be unlearnable zeros
        _save(_scaled(np.where(brain > 0, brain, 0)), aff, root / "data" / "MB" / f"atlas_{n}" / "brain.nii")
        _save(labs, aff, root / "data" / "MB" / f"atlas_{n}" / "dk-struct.nii")
        parc.append((f"atlas_{n}", "MB"))
        # cerebral WM is unlabelled in DKT31; ids unknown to the aseg declaration (vermis, basal forebrain) are brain
        filled = np.where(((labs == 0) & (brain > 0)) | ((labs > 0) & ~np.isin(labs, known)), 2, labs).astype(np.int16)
        _save_head(filled, brain > 0, aff, rng, root / "data" / "HEADS" / f"mb{n}" / "dk-struct.nii")
        heads.append((f"mb{n}", "HEADS"))

    for sub in BRAINPARC_TRAIN:
        src = shared / "brainparc" / sub
        labs, affine = _conformed(src / "dk-struct.nii.gz", 0)
        box = bounding_box(labs > 0, MARGIN)
        labs, aff = _cropped(box, affine, labs)
        _save(labs, aff, root / "data" / "BP" / sub / "dk-struct.nii")
        if (src / "brain.nii.gz").is_file():
            brain, _ = _conformed(src / "brain.nii.gz", 1)
            brain = np.where(labs > 0, brain[box], 0)
            _save(_scaled(brain), aff, root / "data" / "BP" / sub / "brain.nii")
        parc.append((sub, "BP"))
        _save_head(bp_to_fs[labs], labs > 0, aff, rng, root / "data" / "HEADS" / sub / "dk-struct.nii")
        heads.append((sub, "HEADS"))

    ss: list[tuple[str, str]] = []
    for path in sorted((shared / "synthseg_label_maps").glob("training_seg_*.nii.gz")):
        labs, affine = _conformed(path, 0)
        ident = path.name.removesuffix(".nii.gz")
        _save(*_cropped(bounding_box(labs > 0, 2), affine, labs), root / "data" / "SS" / ident / "dk-struct.nii")
        ss.append((ident, "SS"))

    _write_list(root, "parc.csv", parc + ss)
    _write_list(root, "strip.csv", ss + heads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shared", type=Path, help="the shared data folder (../shared/data)")
    p.add_argument("root", type=Path, help="training root to create")
    a = p.parse_args()
    build(a.shared, a.root)
    print(f"training root written to {a.root}")


if __name__ == "__main__":
    main()
