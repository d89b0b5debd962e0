"""Build the probabilistic DK-struct atlas on the pipeline's template (``brainparc/atlas/data``).

    python scripts/build_atlas.py ../shared/data work/train_root

1. The training root of ``scripts/build_training_root.py`` is built if missing (LAS, 1 mm, cropped): Mindboggle
   1–12 (DKT31 + aseg), BrainParc sub001/sub003/sub004 (106 labels), SynthSeg's 20 maps (aseg). fsaverage (aseg) is
   added here. Held out, never read: Mindboggle 13–15 and BrainParc sub005.
2. Every subject is registered with the pipeline's own function (``register_template(..., template="brain")``, the
   one every skull-stripped input gets); label-only subjects get an image painted from their labels' tissue classes.
   The template coordinates are written next to the subject as ``coords.nii`` (the training root's coordinate
   channels) and cached: a rerun registers only what is missing.
3. The label maps are splatted into a 2 mm grid on the template (:mod:`brainparc.atlas.build`) and resolved into
   class probabilities; the result is written as uint8 with the cortex fill (:mod:`brainparc.atlas`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainparc import labels as label_tables
from brainparc.atlas import ATLAS_FILE
from brainparc.atlas.build import AtlasAccumulator, atlas_grid, cortex_fill, resolve
from brainparc.core.conform import conform
from brainparc.core.skullstrip import load_template, register_template
from brainparc.train.data import find_file, folder_declaration, read_file_list
from brainparc.train.labelsets import IGNORE, GroupRegistry, LabelDeclaration, load_declaration

sys.path.insert(0, str(Path(__file__).parent))
from build_training_root import build as build_training_root

#: SyN iterations per level of the source registrations of the bundled atlas (sha256 89f271c27cb2).
SYN_ITERATIONS = (40, 20, 0)
#: Painted intensity of each tissue group (0 bg, 1 CSF, 2 GM, 3 WM; mixed groups look like GM).
PAINT = {0: 0.0, 1: 0.3, 2: 0.65, 3: 1.0}


def _painted(targets: np.ndarray, registry: GroupRegistry) -> np.ndarray:
    """A T1-like image of a label-only subject: each voxel gets its group's tissue intensity."""
    paint = np.array([PAINT.get(int(t), 0.65) for t in registry.tissue_of_group] + [0.0], dtype=np.float32)
    return paint[targets]  # IGNORE (-1) → the last entry, background


def _fsaverage(shared: Path, root: Path) -> None:
    """fsaverage brain + aseg into ``root/data/FSA/fsaverage`` (not in the training lists: an atlas source only)."""
    out = root / "data" / "FSA" / "fsaverage"
    if (out / "dk-struct.nii").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    src = shared / "whole_head" / "mne_fsaverage"
    brain = conform(nib.load(str(src / "brain.mgz")), 1.0, crop_to_head=False).img
    labs = conform(nib.load(str(src / "aseg.mgz")), 1.0, crop_to_head=False, order=0).img
    for arr, name, dtype in ((brain, "brain.nii", np.float32), (labs, "dk-struct.nii", np.int16)):
        data = np.rint(np.asarray(arr.dataobj)) if dtype == np.int16 else np.asarray(arr.dataobj)
        img = nib.Nifti1Image(data.astype(dtype), arr.affine)
        nib.save(img, str(out / name))
    (root / "data" / "FSA" / "labels.json").write_text(json.dumps({"declaration": "aseg"}) + "\n")


def subjects(root: Path) -> list[Path]:
    """Every subject folder of the atlas: the parcellation training list plus fsaverage."""
    return [e.path for e in read_file_list(root, "parc.csv")] + [root / "data" / "FSA" / "fsaverage"]


def register_all(
    root: Path, registry: GroupRegistry, nthreads: int | None, syn_iterations: tuple[int, ...] = SYN_ITERATIONS
) -> None:
    """``coords.nii`` for every subject that lacks one (``register_template`` with ``syn_iterations``)."""
    for path in subjects(root):
        if (path / "coords.nii").is_file():
            continue
        compiled = registry.compile(as_bundled(folder_declaration(path.parent)[0]))
        labs = nib.load(str(find_file(path, "parc")))
        brain_path = find_file(path, "brain")
        if brain_path is not None:
            img = nib.load(str(brain_path))
            moving = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
        else:
            targets = compiled.to_targets(np.asarray(labs.dataobj))
            moving = nib.Nifti1Image(_painted(targets, registry), labs.affine)
        fit = register_template(moving, template="brain", syn_iterations=syn_iterations, nthreads=nthreads)
        coords = nib.Nifti1Image(np.moveaxis(fit.coords, 0, -1), labs.affine)
        nib.save(coords, str(path / "coords.nii"))
        print(f"registered {path.parent.name}/{path.name} in {fit.seconds:.0f} s", flush=True)


def as_bundled(declaration: LabelDeclaration) -> LabelDeclaration:
    """The declaration as the bundled atlas (sha256 89f271c27cb2) was built: Mindboggle's unlabelled brain ignored.

    Training now reads it as white matter (``dkt31_aseg.json``); the atlas keeps its original sources so that this
    script still rebuilds the atlas the bundled weights were trained with (another atlas invalidates them).
    """
    if declaration.name != "dkt31_aseg" or isinstance(declaration.unlabelled_in_brain, str):
        return declaration
    return dataclasses.replace(
        declaration, unlabelled_in_brain="ignore", missing=declaration.missing | declaration.unlabelled_in_brain
    )


def build_atlas(root: Path, out: Path, spacing: float = 2.0) -> None:
    """Splat every registered subject into the atlas grid and write the atlas file."""
    registry = GroupRegistry()
    for name in ("full", "dkt31_aseg", "aseg"):
        registry.compile(as_bundled(load_declaration(name)))
    tpl, _ = load_template()
    affine, shape = atlas_grid(tpl.affine, tpl.shape, spacing)
    acc = AtlasAccumulator(affine, shape, len(registry))
    used = []
    for path in subjects(root):
        compiled = registry.compile(as_bundled(folder_declaration(path.parent)[0]))
        labs = np.asarray(nib.load(str(find_file(path, "parc"))).dataobj)
        brain_path = find_file(path, "brain")
        brain = None if brain_path is None else np.asarray(nib.load(str(brain_path)).dataobj) > 0
        targets = compiled.to_targets(labs, brain)
        coords = np.moveaxis(np.asarray(nib.load(str(path / "coords.nii")).dataobj, dtype=np.float32), -1, 0)
        acc.add(np.where(targets >= 0, targets, IGNORE), coords)
        used.append(f"{path.parent.name}/{path.name}")
    prob = resolve(acc, registry.grouping)
    table = label_tables.dk_struct()
    cortical = np.array([i for i, lab in enumerate(table.labels) if 1000 <= lab.freesurfer_id < 3000])
    fill = cortex_fill(prob, cortical)
    brain = prob[0] < 0.99
    box = tuple(slice(max(0, int(ax.min()) - 3), int(ax.max()) + 4) for ax in np.nonzero(brain))
    crop_affine = affine @ np.vstack([np.c_[np.eye(3), [s.start for s in box]], [0, 0, 0, 1]])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        prob=np.clip(np.rint(prob[(slice(None), *box)] * 255), 0, 255).astype(np.uint8),
        cortex_fill=fill[box],
        affine=crop_affine,
        name=np.array(f"dk_struct-mni2009a-{spacing:g}mm"),
        sources=np.array(used),
    )
    print(
        f"atlas {out}: {len(used)} sources, grid {prob[(slice(None), *box)].shape}, {out.stat().st_size / 1e6:.1f} MB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shared", type=Path, help="the shared data folder (../shared/data)")
    p.add_argument("root", type=Path, help="training root (built if missing; coords.nii are added to it)")
    p.add_argument("--out", type=Path, default=ATLAS_FILE, help="atlas file to write (default: the bundled one)")
    p.add_argument("--nthreads", type=int, default=None, help="ITK threads for the registrations")
    p.add_argument(
        "--syn-iterations", type=int, nargs="+", default=list(SYN_ITERATIONS), help="SyN iterations per level (2.5 mm)"
    )
    a = p.parse_args()
    if not (a.root / "csvfile" / "parc.csv").is_file():
        build_training_root(a.shared, a.root)
    _fsaverage(a.shared, a.root)
    start = time.perf_counter()
    register_all(a.root, GroupRegistry(), a.nthreads, tuple(a.syn_iterations))
    print(f"registrations done in {time.perf_counter() - start:.0f} s", flush=True)
    build_atlas(a.root, a.out)


if __name__ == "__main__":
    main()
