"""``brainparc demo OUTDIR``: a tiny BIDS dataset from nilearn's bundled MNI152 template, then participant + group.

The dataset (``OUTDIR/bids``): ``sub-01`` with two sessions (``ses-2`` stored flipped left-right and resampled to
an anisotropic grid, to exercise conforming and the way back to the input grid) and ``sub-02``; ``participants.tsv``
and ``sessions.tsv`` hold ages. Nothing is downloaded: the template ships inside nilearn. The images are
skull-stripped (template times its brain mask), which ``--skull-strip auto`` detects, so no registration runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from brainparc.outputs import save_nifti_atomic, write_atomic, write_json_atomic


def _template(resolution: float) -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
    from nilearn.image import resample_img

    tpl = load_mni152_template(resolution=1)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    # the template's background is not exactly 0: zero it with the bundled brain mask (a truly stripped input)
    tpl = nib.Nifti1Image(np.asarray(tpl.dataobj, dtype=np.float32) * mask, tpl.affine)
    if resolution != 1:
        target = np.diag([resolution, resolution, resolution, 1.0])
        target[:3, 3] = tpl.affine[:3, 3]
        tpl = resample_img(tpl, target_affine=target, interpolation="continuous", force_resample=True, copy_header=True)
    data = np.clip(np.asarray(tpl.dataobj, dtype=np.float32), 0, None)
    data[data < 1e-3 * data.max()] = 0.0  # spline resampling leaves ~1e-18 ringing in the background
    return nib.Nifti1Image(data, tpl.affine)


def build_demo_dataset(bids_dir: str | os.PathLike, resolution: float = 2.0) -> Path:
    """Write the demo BIDS dataset into ``bids_dir``; returns it."""
    bids_dir = Path(bids_dir)
    base = _template(resolution)
    data = np.asarray(base.dataobj)
    flipped_affine = base.affine @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    flipped = nib.Nifti1Image(data[::-1].copy(), flipped_affine)  # same anatomy, stored LAS
    aniso = nib.Nifti1Image(data[:, :, ::2].copy(), base.affine @ np.diag([1.0, 1.0, 2.0, 1.0]))
    images = {
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": base,
        "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz": flipped,
        "sub-02/anat/sub-02_T1w.nii.gz": aniso if min(aniso.shape) >= 32 else base,
    }
    for rel, img in images.items():
        img.header.set_xyzt_units("mm")
        save_nifti_atomic(img, bids_dir / rel)
    write_json_atomic(
        bids_dir / "dataset_description.json",
        {"Name": "brainparc demo (MNI152 template from nilearn)", "BIDSVersion": "1.10.0", "License": "see nilearn"},
    )
    write_atomic(bids_dir / "participants.tsv", "participant_id\tage\tsex\nsub-01\t30\tn/a\nsub-02\t45\tn/a\n")
    write_atomic(bids_dir / "sub-01" / "sub-01_sessions.tsv", "session_id\tage\nses-1\t30\nses-2\t31.5\n")
    write_json_atomic(bids_dir / "T1w.json", {"MagneticFieldStrength": 3})
    write_atomic(bids_dir / "README", "Demo dataset built by `brainparc demo` from nilearn's MNI152 template.\n")
    return bids_dir


def run_demo(
    outdir: str | os.PathLike,
    models: Sequence[str] = ("default",),
    skull_strip: str = "auto",
    device: str = "auto",
    nprocs: int | None = None,
    omp_nthreads: int | None = None,
    resolution: float = 2.0,
    verbosity: Sequence[str] = (),
) -> int:
    """Build the dataset, run participant then group (one line per stage), print where the reports are; returns the
    exit code. ``verbosity`` (``-v``, ``--quiet``) is passed to both levels."""
    from brainparc.cli.main import main
    from brainparc.pipeline import load_models

    outdir = Path(outdir).absolute()
    load_models(list(models))  # fail (exit 4) before building anything when weights are missing
    print(f"brainparc demo: building the dataset in {outdir / 'bids'} (MNI152 template from nilearn)", flush=True)
    bids_dir = build_demo_dataset(outdir / "bids", resolution)
    deriv = outdir / "derivatives"
    common = [f"--model={m}" for m in models] + ["--skull-strip", skull_strip, "--device", device, *verbosity]
    common += ["-w", str(outdir / "work")]  # the demo dataset is validated too (deno validator, when installed)
    if nprocs:
        common += ["--nprocs", str(nprocs)]
    if omp_nthreads:
        common += ["--omp-nthreads", str(omp_nthreads)]
    n_t1w = len(list(bids_dir.rglob("*_T1w.nii.gz")))
    print(f"brainparc demo: participant level ({n_t1w} T1w images; minutes on a CPU) into {deriv}", flush=True)
    code = main([str(bids_dir), str(deriv), "participant", *common])
    print("brainparc demo: group level", flush=True)
    group_code = main([str(bids_dir), str(deriv), "group", *verbosity])
    for report in [*sorted(deriv.glob("sub-*.html")), deriv / "group" / "report.html"]:
        print(f"brainparc demo: report {report}{'' if report.is_file() else ' (missing)'}")
    return code or group_code
