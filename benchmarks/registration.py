"""Robustness of the whole-head template registration: the same head registered with several ANTs seeds.

    python benchmarks/registration.py --seeds 1 2 3 42 --nthreads 1 --out work/registration.tsv

Each whole head in ``../shared/data/whole_head`` is N4-corrected and conformed as the pipeline does (fast recipe,
1 mm), then :func:`brainparc.core.skullstrip.register_template` runs once per seed. Reported per run: the template
brain-mask volume (litres), its Dice against FreeSurfer's ``brain.mgz`` where the case has one (MNE sample), and the
seconds. A robust registration gives the same volume for every seed; a failed one (template brain in the face and
neck) shows as a volume far above the reference's. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "mne": ("whole_head/mne_sample/T1.mgz", "whole_head/mne_sample/brain.mgz"),
    "brainchop": ("whole_head/brainchop/t1_crop.nii.gz", None),
}


def conformed_head(path: Path) -> nib.Nifti1Image:
    """The image the fast recipe registers: N4 on the input grid, then conformed to 1 mm LAS with its grid settings."""
    from brainparc.core.bias import n4
    from brainparc.core.conform import conform
    from brainparc.inference.recipes import RECIPES

    fast = RECIPES["fast"]
    grid = {"crop_to_head": fast.crop_to_head, "anchor": fast.grid_anchor, "antialias": fast.antialias}
    return conform(n4(nib.load(path)), 1.0, **grid).img


def reference_mask(path: Path, grid: nib.Nifti1Image) -> np.ndarray:
    from nibabel.processing import resample_from_to

    ref = nib.load(path)
    binary = nib.Nifti1Image((np.asarray(ref.dataobj) > 0).astype(np.float32), ref.affine)
    return np.asarray(resample_from_to(binary, grid, order=0).dataobj) > 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 42])
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=SHARED, help="../shared/data")
    parser.add_argument("--out", type=Path, help="also write the rows as TSV")
    args = parser.parse_args(argv)

    from brainparc.core.io import set_ants_threads
    from brainparc.core.skullstrip import register_template

    set_ants_threads(args.nthreads)
    rows = []
    for case in args.cases:
        head_path, ref_path = CASES[case]
        img = conformed_head(args.shared / head_path)
        ref = reference_mask(args.shared / ref_path, img) if ref_path else None
        litres_per_voxel = float(np.prod(img.header.get_zooms()[:3])) / 1e6
        for seed in args.seeds:
            start = time.perf_counter()
            mask = register_template(img, template="head", nthreads=args.nthreads, seed=seed).mask
            seconds = time.perf_counter() - start
            dice = 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) if ref is not None else float("nan")
            row = {
                "case": case,
                "seed": seed,
                "mask_l": round(mask.sum() * litres_per_voxel, 3),
                "reference_l": round(ref.sum() * litres_per_voxel, 3) if ref is not None else "",
                "dice": round(float(dice), 4) if ref is not None else "",
                "seconds": round(seconds, 1),
            }
            rows.append(row)
            print("\t".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
