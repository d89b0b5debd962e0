"""Dev check for CSF and contrast: a held-out SynthSeg label map painted as a T1-like and a contrast-inverted
skull-stripped image, run through the real ``brainparc parcellate`` command and scored by tissue Dice (CSF/GM/WM)
against the map's own tissue classes. Not collected by pytest.

The map (default ``training_seg_20``) must be one no model trained on: ``work/train_root`` lists SynthSeg maps 1-19
only. Intensities come from the training generator (:func:`brainparc.train.synth.synthesize`, no deformation, T1-like
tissue priors; ``inverted`` mirrors every foreground mean, so CSF turns bright: a T2-like contrast, not a real infant
T1). Brain + CSF are kept (the ``aseg`` declaration's non-background), everything else is 0.

Usage::

    python benchmarks/dev_synthetic.py make                       # writes work/dev_synth/{t1,inverted}.nii.gz
    python benchmarks/dev_synthetic.py run TAG WEIGHTS|atlas      # appends {TAG: {t1: Dice, inverted: Dice}}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainparc.train.labelsets import GroupRegistry, load_declaration
from brainparc.train.synth import SynthParams, lateral_classes, synthesize, tissue_priors

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTRASTS = {"t1": 0.0, "inverted": 1.0}  # invert_prob of each image


def tissue_reference(labels: np.ndarray) -> tuple[np.ndarray, dict[int, int | None]]:
    """Tissue class per voxel (0 bg, 1 CSF, 2 GM, 3 WM; -1 ignored) and per label value (the ``aseg`` declaration)."""
    registry = GroupRegistry()
    compiled = registry.compile(load_declaration("aseg"))
    groups = compiled.to_targets(labels, None)
    tog = np.append(registry.tissue_of_group, 0)
    tissue = np.where(groups >= 0, tog[np.clip(groups, 0, None)], -1)
    tissue = np.where(tissue > 3, -1, tissue)  # merged groups of mixed tissue: not scored
    per_value = {
        int(v): (int(registry.tissue_of_group[g]) if g >= 0 and registry.tissue_of_group[g] < 4 else None)
        for v, g in compiled.lut.items()
    }
    return tissue, per_value


def make(label_map: Path, out: Path, seed: int) -> None:
    """Paint the two test images and write the tissue reference."""
    out.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(label_map))
    labels = np.rint(np.asarray(img.dataobj)).astype(np.int64)
    tissue, per_value = tissue_reference(labels)
    n = int(labels.max()) + 1
    keep = torch.from_numpy(np.where(tissue > 0, labels, 0))
    for name, invert in CONTRASTS.items():
        params = SynthParams(deform=False, prior_prob=1.0, invert_prob=invert, background_zero=True,
                             lowres_prob=0.0, bias_std=0.1)  # fmt: skip
        x, _ = synthesize(keep, torch.Generator().manual_seed(seed), params, priors=tissue_priors(per_value, n),
                          classes=lateral_classes(n, "freesurfer"))  # fmt: skip
        nib.save(nib.Nifti1Image((x.numpy() * 1000).astype(np.float32), img.affine), str(out / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(tissue.astype(np.int16), img.affine), str(out / "tissue_ref.nii.gz"))


def run(tag: str, weights: str, out: Path, nthreads: int) -> dict:
    """Parcellate both images with ``weights`` and score their tissue maps."""
    ref = np.asarray(nib.load(str(out / "tissue_ref.nii.gz")).dataobj)
    scored = ref >= 0
    result = {}
    for name in CONTRASTS:
        case = out / tag / name
        cmd = [sys.executable, "-m", "brainparc", "parcellate", str(out / f"{name}.nii.gz"), "-o", str(case),
               "--nthreads", str(nthreads), "--skull-strip", "auto", "--model", weights]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        tissue = np.rint(np.asarray(nib.load(str(case / "tissue_dseg.nii.gz")).dataobj)).astype(int)
        dice = {}
        for k, cls in ((1, "CSF"), (2, "GM"), (3, "WM")):
            a, b = (tissue == k) & scored, (ref == k) & scored
            dice[cls] = round(2 * float((a & b).sum()) / max(int(a.sum() + b.sum()), 1), 4)
        dice["mean"] = round(float(np.mean(list(dice.values()))), 4)
        result[name] = dice
    with open(out / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({tag: result}) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("make", "run"))
    p.add_argument("tag", nargs="?")
    p.add_argument("weights", nargs="?", help="a .safetensors file or 'atlas'")
    p.add_argument("--label-map", type=Path, default=SHARED / "synthseg_label_maps" / "training_seg_20.nii.gz")
    p.add_argument("--out", type=Path, default=Path("work/dev_synth"))
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--nthreads", type=int, default=1)
    a = p.parse_args(argv)
    if a.action == "make":
        make(a.label_map, a.out, a.seed)
    else:
        if not (a.tag and a.weights):
            p.error("run needs TAG and WEIGHTS")
        print(json.dumps({a.tag: run(a.tag, a.weights, a.out, a.nthreads)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
