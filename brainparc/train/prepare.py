"""``brainparc train prepare``: a BIDS dataset + FreeSurfer-style aparc+aseg label maps → the training seed layout.

For every T1w image ``BIDS_DIR/sub-<s>/[ses-<t>/]anat/*_T1w.nii[.gz]`` (the first in sorted order per subject and
session) whose label map is found in ``LABELS_DIR`` (see :data:`LABELS_HELP` for the accepted names), the T1w is
resampled onto the label map's grid (physical space, trilinear), both are reoriented to LAS (the network's array
order; no resampling), cropped to the labelled volume plus ``margin`` voxels, and N4-corrected with the run-time
settings (fitted on this crop; ``brainparc parcellate`` fits it on the whole input grid).  Written to
``ROOT/data/<folder>/<ID>/`` (``ID`` = ``sub-<s>`` or ``sub-<s>_ses-<t>``)::

    T1w.nii.gz          head (float32)                 -> ``train strip`` input
    skull-strip.nii.gz  brain mask: labels > 0, closed and hole-filled (uint8)
    brain.nii.gz        T1w × mask (float32)           -> ``train parc`` input
    brain_edge.nii.gz   reference Sobel edges of brain.nii.gz (int16)
    dk-struct.nii.gz    the label map in FreeSurfer ids (int16)

plus ``ROOT/data/<folder>/labels.json`` (the :data:`APARC_ASEG` declaration: labels are FreeSurfer ids) and rows
``ID,<folder>,<fold>`` in ``ROOT/csvfile/file_list.csv`` (rows of other folders are kept; a seeded random
``val_fraction`` of the subjects gets fold 2, ``test_fraction`` fold 1, the rest fold 3).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "APARC_ASEG",
    "LABELS_HELP",
    "bounding_box",
    "find_label_map",
    "find_t1w_images",
    "prepare_dataset",
    "prepare_subject",
]

LABELS_HELP = """LABELS_DIR naming (first match wins; <id> is sub-<s> or sub-<s>_ses-<t>):
  LABELS_DIR/<id>/mri/aparc+aseg.mgz                  a FreeSurfer SUBJECTS_DIR (also sub-<s>/mri/... for sessions)
  LABELS_DIR/<id>_aparc+aseg.{nii.gz,nii,mgz}         flat files
  LABELS_DIR/sub-<s>/[ses-<t>/]anat/<id>*_desc-aparcaseg_dseg.nii.gz   BIDS derivatives (fMRIPrep/sMRIPrep)
Labels are FreeSurfer ids (aparc+aseg: Desikan-Killiany cortex 1001-1035/2001-2035 + aseg).  The map may be on any
grid (e.g. FreeSurfer's conformed 256^3 LIA space): the T1w is resampled onto it."""

#: aparc+aseg in FreeSurfer ids: DK parcels and aseg structures by the label table's ids; leftover cortex voxels
#: (3/42) are "some cortical parcel of that side"; WM hypointensities (77) are cerebral WM of either side; lesions,
#: vessels and the 5th ventricle are ignored, as are ids without a BrainParc class (e.g. 1000/2000 unknown cortex).
APARC_ASEG: dict[str, Any] = {
    "name": "aparc_aseg",
    "description": "FreeSurfer aparc+aseg (DK atlas) in FreeSurfer ids, written by brainparc train prepare.",
    "label_space": "freesurfer",
    "groups": {"3": ["@cortex_L"], "42": ["@cortex_R"], "77": ["Cerebral_WM_L", "Cerebral_WM_R"]},
    "ignore_ids": [25, 57, 30, 62, 72, 80],
    "unknown": "ignore",
    "unlabelled_in_brain": "background",
    "missing": [],
}


def find_t1w_images(bids_dir: str | Path, participants: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """``(ID, path)`` of the first T1w per subject and session (sorted), optionally only ``participants``."""
    bids = Path(bids_dir)
    wanted = None if not participants else {p.removeprefix("sub-") for p in participants}
    found: dict[str, Path] = {}
    for path in sorted(bids.glob("sub-*/anat/*_T1w.nii*")) + sorted(bids.glob("sub-*/ses-*/anat/*_T1w.nii*")):
        sub = path.relative_to(bids).parts[0]
        ses = path.relative_to(bids).parts[1] if path.relative_to(bids).parts[1].startswith("ses-") else None
        if wanted is not None and sub.removeprefix("sub-") not in wanted:
            continue
        found.setdefault(sub if ses is None else f"{sub}_{ses}", path)
    return sorted(found.items())


def find_label_map(labels_dir: str | Path, ident: str) -> Path | None:
    """The label map of ``ident`` (``sub-<s>`` or ``sub-<s>_ses-<t>``) in ``labels_dir`` (see :data:`LABELS_HELP`)."""
    root = Path(labels_dir)
    sub, _, ses = ident.partition("_")
    candidates = [root / ident / "mri" / "aparc+aseg.mgz", root / sub / "mri" / "aparc+aseg.mgz"]
    candidates += [root / f"{ident}_aparc+aseg{ext}" for ext in (".nii.gz", ".nii", ".mgz")]
    anat = root / sub / ses / "anat" if ses else root / sub / "anat"
    candidates += sorted(anat.glob(f"{ident}*_desc-aparcaseg_dseg.nii*"))
    return next((c for c in candidates if c.is_file()), None)


def _brain_mask(labels: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = ndimage.binary_closing(labels > 0, ndimage.generate_binary_structure(3, 1), iterations=2)
    return ndimage.binary_fill_holes(m | (labels > 0))


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array); error if empty."""
    nz = np.nonzero(mask)
    if nz[0].size == 0:
        raise ValueError("the label map is empty")
    return tuple(
        slice(max(0, int(a.min()) - margin), min(n, int(a.max()) + 1 + margin))
        for a, n in zip(nz, mask.shape, strict=True)
    )


def prepare_subject(t1w: str | Path, label_map: str | Path, out_dir: str | Path, *, n4: bool = True, margin: int = 24):
    """Write the five files of one subject (module docstring) into ``out_dir``; returns ``out_dir``."""
    from nibabel.processing import resample_from_to

    from brainparc.core.conform import conform
    from brainparc.core.io import load_t1w
    from brainparc.train.data import _edge_array

    t1 = load_t1w(t1w)
    lab = nib.load(os.fspath(label_map))
    t1_data = np.asarray(t1.dataobj, dtype=np.float32).reshape(t1.shape[:3])
    lab_img = nib.Nifti1Image(np.rint(np.asarray(lab.dataobj)).astype(np.float32).reshape(lab.shape[:3]), lab.affine)
    on_grid = resample_from_to(nib.Nifti1Image(t1_data, t1.affine), lab_img, order=1)
    head_c = conform(on_grid, None, crop_to_head=False).img
    lab_c = conform(lab_img, None, crop_to_head=False, order=0).img
    labels = np.rint(np.asarray(lab_c.dataobj)).astype(np.int16)
    box = bounding_box(labels > 0, margin)
    affine = head_c.slicer[box].affine
    head = np.asarray(head_c.dataobj, dtype=np.float32)[box]
    labels = labels[box]
    if n4:
        from brainparc.core.bias import n4 as n4_correct

        head = np.asarray(n4_correct(nib.Nifti1Image(head, affine)).dataobj, dtype=np.float32)
    mask = _brain_mask(labels)
    brain = head * mask
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr, dtype in (
        ("T1w.nii.gz", head, np.float32),
        ("skull-strip.nii.gz", mask, np.uint8),
        ("brain.nii.gz", brain, np.float32),
        ("brain_edge.nii.gz", _edge_array(brain), np.int16),
        ("dk-struct.nii.gz", labels, np.int16),
    ):
        img = nib.Nifti1Image(np.asarray(arr).astype(dtype), affine)
        img.set_data_dtype(dtype)
        nib.save(img, str(out / name))
    return out


def _assign_folds(ids: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, int]:
    n = len(ids)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    if n and n_val + n_test >= n:
        raise ValueError(f"{n} subject(s): val/test fractions leave no training subject")
    order = np.random.default_rng(seed).permutation(n)
    folds = {}
    for rank, i in enumerate(order):
        folds[ids[i]] = 2 if rank < n_val else (1 if rank < n_val + n_test else 3)
    return folds


def _write_file_list(root: Path, folder: str, folds: dict[str, int]) -> None:
    path = root / "csvfile" / "file_list.csv"
    rows: list[tuple[str, str, int]] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [(r["IDs"].strip(), r["folder"].strip(), int(r["fold"])) for r in csv.DictReader(fh)]
    rows = [r for r in rows if not (r[1] == folder and r[0] in folds)] + [(i, folder, f) for i, f in folds.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["IDs", "folder", "fold"])
        w.writerows(rows)


def prepare_dataset(
    bids_dir: str | Path,
    labels_dir: str | Path,
    root: str | Path,
    *,
    folder: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    n4: bool = True,
    participants: Sequence[str] | None = None,
) -> list[tuple[str, str, int]]:
    """Convert every T1w with a label map (module docstring); returns the ``(ID, folder, fold)`` rows written."""
    import json
    import logging

    log = logging.getLogger("brainparc.train")
    bids, root = Path(bids_dir), Path(root)
    if not bids.is_dir():
        raise FileNotFoundError(f"BIDS folder not found: {bids}")
    if not Path(labels_dir).is_dir():
        raise FileNotFoundError(f"labels folder not found: {labels_dir}")
    folder = folder or bids.resolve().name
    pairs = []
    for ident, t1w in find_t1w_images(bids, participants):
        lab = find_label_map(labels_dir, ident)
        if lab is None:
            log.warning("%s: no aparc+aseg in %s, skipped", ident, labels_dir)
        else:
            pairs.append((ident, t1w, lab))
    if not pairs:
        raise FileNotFoundError(f"no T1w of {bids} has a label map in {labels_dir}\n{LABELS_HELP}")
    folds = _assign_folds([p[0] for p in pairs], val_fraction, test_fraction, seed)
    for ident, t1w, lab in pairs:
        log.info("%s: %s + %s", ident, t1w.name, lab)
        prepare_subject(t1w, lab, root / "data" / folder / ident, n4=n4)
    decl = root / "data" / folder / "labels.json"
    decl.write_text(json.dumps({"declaration": APARC_ASEG}, indent=2) + "\n", encoding="utf-8")
    _write_file_list(root, folder, folds)
    return [(i, folder, f) for i, f in folds.items()]
