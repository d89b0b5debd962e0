"""Training data: the reference's seed layout, per-folder label declarations and the patch dataset (spec §4.1–4.2).

Layout (``ROOT``)::

    csvfile/file_list.csv                 columns IDs, folder, fold (header required)
    data/<folder>/labels.json             optional label declaration of the folder (default: "full")
    data/<folder>/<ID>/brain.nii.gz       skull-stripped T1w                      (task "parc")
                       brain_edge.nii.gz  alias brain_sober.nii.gz; computed on the fly when missing
                       dk-struct.nii.gz   labels in the declaration's label space (or "label_file")
                       tissue.nii.gz      tissue map (used when there is no dk-struct file)
                       coords.nii.gz      template coordinates [X, Y, Z, 3] (atlas-guided; scripts/build_atlas.py)
                       T1w.nii.gz | pseudo_brain.nii.gz, skull-strip.nii.gz | skull_strip.nii.gz   (task "strip")

``labels.json`` is either a declaration (schema in :mod:`brainparc.train.labelsets`) or
``{"declaration": "<built-in name or dict>", "label_file": "labels.nii.gz"}``.  Folds: 3 = train, 2 = validation,
1 = test (the README rule; ``fold_roles`` changes it).  A subject without an image file (label maps only, e.g.
SynthSeg's whole-head maps) is always synthesised.

Patches (:class:`PatchDataset`, one patch per subject per epoch as in the reference): with probability
``foreground_prob`` (0.9) the window centre is a random voxel whose target is not background (i.e. in the brain,
ignored voxels included), else a uniformly random voxel.  The window may extend ``margin`` (32) voxels beyond the
volume as in the reference, whose zero padding it mimics; volumes smaller than the window are padded (the reference's
clamp breaks below 96 voxels, §7 item 24).  Out-of-volume voxels get image 0 and target IGNORE.  Both channels are
normalised with ``normalisation``, the model card's recipe, as inference does it (``official-zscore`` over the whole
volume; ``in-mask-zscore`` inside the brain, preferable for new models, §7 item 29).  Real images can be augmented
(``augment``: random affine + nonlinear deformation and the synth intensity chain — blur, low resolution, noise, bias,
gamma — after which the edges are recomputed and the patch renormalised).  With probability ``synth_ratio`` the
image is synthesised from the labels instead (:func:`brainparc.train.synth.synthesize`; default: half the draws
around T1-like tissue priors, half uniformly random, 30 % contrast-inverted (infant-like); background zeroed for
``parc``) and normalised over the patch.

An epoch draws ``patches_per_subject`` patches per subject (1 in the reference; more keeps the DataLoader workers busy
between epochs when there are few subjects).  For ``strip``, synthetic heads are multiplied with probability
``pseudo_brain_prob`` by a randomly dilated brain mask (:func:`pseudo_brain_mask`), which is what the network sees at
run time (the template pseudo-brain), instead of a whole head.

Atlas-guided models (``coords=True``) get the subject's template coordinates as three more channels, cropped or
resampled with the same window (and, for synthetic images, the same random deformation) as the image and never
normalised (outside the volume: :data:`~brainparc.core.skullstrip.OUTSIDE_TEMPLATE`).  Label-only subjects need a
``coords`` file too (``scripts/build_atlas.py`` writes one for every subject it registers).

Randomness: every item draws from a generator seeded by ``(seed, epoch, rank, index)``
(:meth:`PatchDataset.set_epoch`), so patches do not depend on worker assignment; :func:`seed_worker` seeds numpy and
``random`` per DataLoader worker for any other library code.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from brainparc.core.skullstrip import OUTSIDE_TEMPLATE
from brainparc.train.labelsets import IGNORE, CompiledDeclaration, GroupRegistry, LabelDeclaration, load_declaration
from brainparc.train.synth import (
    SynthParams,
    augment_intensity,
    lateral_classes,
    random_spatial_grid,
    resample,
    smooth_displacement,
    synthesize,
    tissue_priors,
)

__all__ = [
    "DEFAULT_FOLD_ROLES",
    "FILE_ALIASES",
    "PatchDataset",
    "SubjectEntry",
    "crop_pad",
    "find_file",
    "folder_declaration",
    "fully_labelled_fractions",
    "pseudo_brain_mask",
    "read_file_list",
    "seed_worker",
    "select_role",
    "window_start",
]

DEFAULT_FOLD_ROLES: dict[str, tuple[int, ...]] = {"train": (3,), "val": (2,), "test": (1,)}
FILE_ALIASES: dict[str, tuple[str, ...]] = {
    "brain": ("brain.nii.gz",),
    "edge": ("brain_edge.nii.gz", "brain_sober.nii.gz"),
    "parc": ("dk-struct.nii.gz",),
    "tissue": ("tissue.nii.gz",),
    "head": ("T1w.nii.gz", "pseudo_brain.nii.gz"),
    "mask": ("skull-strip.nii.gz", "skull_strip.nii.gz"),
    "coords": ("coords.nii.gz",),
}


@dataclass(frozen=True)
class SubjectEntry:
    """One row of ``file_list.csv``, resolved to its directory."""

    subject: str
    folder: str
    fold: int
    path: Path


def read_file_list(root: str | Path, file_list: str = "file_list.csv") -> list[SubjectEntry]:
    """Rows of ``ROOT/csvfile/<file_list>`` (columns ``IDs, folder, fold``; surrounding spaces tolerated)."""
    root = Path(root)
    path = root / "csvfile" / file_list
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(fh)]
    if rows and not {"IDs", "folder", "fold"} <= set(rows[0]):
        raise ValueError(f"{path}: columns must be IDs, folder, fold; found {sorted(rows[0])}")
    return [SubjectEntry(r["IDs"], r["folder"], int(r["fold"]), root / "data" / r["folder"] / r["IDs"]) for r in rows]


def select_role(
    entries: Sequence[SubjectEntry], role: str, fold_roles: Mapping[str, Sequence[int]] | None = None
) -> list[SubjectEntry]:
    """The entries whose fold belongs to ``role`` (``train``/``val``/``test`` by default: folds 3/2/1)."""
    roles = DEFAULT_FOLD_ROLES if fold_roles is None else fold_roles
    if role not in roles:
        raise ValueError(f"unknown role {role!r}; known: {sorted(roles)}")
    return [e for e in entries if e.fold in set(roles[role])]


def find_file(directory: str | Path, kind: str) -> Path | None:
    """The first existing file of ``FILE_ALIASES[kind]`` in ``directory`` (None if none exists).

    Each ``.nii.gz`` name is also accepted uncompressed (``.nii``: faster to read on every draw).
    """
    for name in FILE_ALIASES[kind]:
        for candidate in (name, name.removesuffix(".gz")):
            p = Path(directory) / candidate
            if p.is_file():
                return p
    return None


def folder_declaration(folder_dir: str | Path) -> tuple[LabelDeclaration, str | None]:
    """The folder's label declaration (``labels.json``, default ``full``) and its optional ``label_file``."""
    path = Path(folder_dir) / "labels.json"
    if not path.is_file():
        return load_declaration("full"), None
    d: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if "declaration" in d:
        return load_declaration(d["declaration"]), d.get("label_file")
    return load_declaration(d), None


def crop_pad(vol: np.ndarray | torch.Tensor, start: Sequence[int], size: int, fill: float = 0) -> torch.Tensor:
    """``size³`` window of ``vol`` starting at ``start`` (may be negative / past the end), ``fill`` outside."""
    t = torch.as_tensor(vol)
    out = torch.full((size,) * 3, fill, dtype=t.dtype)
    src, dst = [], []
    for s, n in zip(start, t.shape, strict=True):
        lo, hi = max(s, 0), min(s + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = t[tuple(src)]
    return out


def window_start(centre: Sequence[int], shape: Sequence[int], size: int, margin: int) -> list[int]:
    """Window start per axis: centred on ``centre``, kept within [−margin, n − size + margin] (any n)."""
    out = []
    for c, n in zip(centre, shape, strict=True):
        lo, hi = -margin, n - size + margin
        if lo > hi:  # volume smaller than the window: keep it entirely inside
            lo, hi = hi, lo
        out.append(int(np.clip(int(c) - size // 2, lo, hi)))
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    PyTorch gives each worker ``base_seed + worker_id``; the base seed comes from the DataLoader's generator, so give
    each rank its own (e.g. ``torch.Generator().manual_seed(seed + rank)``).
    """
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002 - seeds the legacy global state that third-party code uses
    random.seed(s)


def pseudo_brain_mask(brain: torch.Tensor, gen: torch.Generator, radius: tuple[int, int] = (2, 9)) -> torch.Tensor:
    """A pseudo-brain support like the one AutoStrip sees at run time: the brain dilated by a random radius.

    At run time the network refines ``head × (registered template mask dilated 5×)``; registration error and head
    size make the margin around the true brain vary, so training draws the radius from ``radius`` (voxels, cube).
    """
    r = int(torch.randint(radius[0], radius[1] + 1, (), generator=gen))
    m = (brain > 0).float()[None, None]
    for axis in range(3):  # a cube is separable: three 1-D max filters instead of one (2r+1)³ one
        k, p = [1, 1, 1], [0, 0, 0]
        k[axis], p[axis] = 2 * r + 1, r
        m = torch.nn.functional.max_pool3d(m, tuple(k), stride=1, padding=tuple(p))
    return m[0, 0]


def _edge_array(arr: np.ndarray) -> np.ndarray:
    """Reference Sobel edge map of an array (int16-truncated, as the training files).

    Uses ``brainparc.preprocessing.sobel_edges`` (imported lazily) and falls back to ``brainparc.core.edges``.
    """
    try:
        from brainparc.preprocessing import sobel_edges

        img = sobel_edges(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), np.eye(4)))
        return np.asarray(img.dataobj, dtype=np.float32)
    except ImportError:
        from brainparc.core.edges import sobel_edges_array

        return sobel_edges_array(np.asarray(arr, dtype=np.float32)).astype(np.float32)


def _normalise(arr: np.ndarray | torch.Tensor, recipe: str, mask: np.ndarray | torch.Tensor | None) -> np.ndarray:
    """The model card's intensity recipe (``brainparc.core.intensity.normalise``), as inference applies it."""
    from brainparc.core.intensity import normalise

    m = None if mask is None or recipe != "in-mask-zscore" else np.asarray(mask)
    if m is not None and not m.any():  # a background draw with no brain in the window: nothing to normalise
        return np.zeros(np.shape(arr), dtype=np.float32)
    return normalise(np.asarray(arr, dtype=np.float32), recipe, mask=m).astype(np.float32)


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


class PatchDataset(Dataset):
    """Random training patches from the seed layout (one per subject and epoch); see the module docstring.

    Pass one ``registry`` to the training and validation datasets so that their group ids agree (the losses take
    ``registry.grouping``).  A subject folder with only ``tissue.nii.gz`` is read with the ``tissue_only`` declaration.

    Items are dicts: ``image`` float32 ``[C, P, P, P]`` (``parc``: intensity + edge, z-scored; ``strip``: intensity),
    ``target`` int64 ``[P, P, P]`` (parc: group ids of ``registry``, IGNORE = -1; strip: 0/1, IGNORE outside the
    volume), ``synthetic`` bool, ``subject`` ``"<folder>/<ID>"``.
    """

    def __init__(
        self,
        root: str | Path,
        role: str = "train",
        *,
        task: str = "parc",
        patch_size: int = 160,
        registry: GroupRegistry | None = None,
        file_list: str = "file_list.csv",
        fold_roles: Mapping[str, Sequence[int]] | None = None,
        synth_ratio: float = 0.0,
        synth_params: SynthParams | None = None,
        augment: SynthParams | None = None,
        foreground_prob: float = 0.9,
        margin: int = 32,
        normalisation: str = "official-zscore",
        seed: int = 0,
        rank: int = 0,
        patches_per_subject: int = 1,
        pseudo_brain_prob: float = 0.0,
        coords: bool = False,
        coord_noise: float = 0.0,
    ):
        if task not in ("parc", "strip"):
            raise ValueError(f"task must be 'parc' or 'strip', got {task!r}")
        if not 0.0 <= synth_ratio <= 1.0:
            raise ValueError("synth_ratio must lie in [0, 1]")
        self.root, self.task, self.patch_size = Path(root), task, int(patch_size)
        self.entries = select_role(read_file_list(self.root, file_list), role, fold_roles)
        self.registry = GroupRegistry() if registry is None else registry
        self.synth_ratio, self.foreground_prob, self.margin = synth_ratio, foreground_prob, margin
        self.synth_params = synth_params or SynthParams(
            background_zero=(task == "parc"), prior_prob=0.5, invert_prob=0.3
        )
        self.augment = augment
        self.normalisation = normalisation
        self.seed, self.rank, self.epoch = seed, rank, 0
        if patches_per_subject < 1:
            raise ValueError("patches_per_subject must be ≥ 1")
        if not 0.0 <= pseudo_brain_prob <= 1.0:
            raise ValueError("pseudo_brain_prob must lie in [0, 1]")
        self.patches_per_subject, self.pseudo_brain_prob = int(patches_per_subject), pseudo_brain_prob
        if coords and task != "parc":
            raise ValueError("template coordinates need task 'parc'")
        if coord_noise < 0:
            raise ValueError("coord_noise must be ≥ 0")
        if coord_noise > 0 and augment is None and synth_ratio < 1:
            raise ValueError("coord_noise displaces resampled patches: real images need augmentation (--augment)")
        self.coords, self.coord_noise = coords, float(coord_noise)
        self.declarations: dict[str, tuple[CompiledDeclaration, str | None]] = {}
        for folder in sorted({e.folder for e in self.entries}):  # sorted: registry order is reproducible
            decl, label_file = folder_declaration(self.root / "data" / folder)
            self.declarations[folder] = (self.registry.compile(decl), label_file)
        # subjects with only tissue.nii.gz are read as tissue maps (compiled up front: workers never grow the registry)
        self.tissue_fallback = self.registry.compile(load_declaration("tissue_only"))

    def __len__(self) -> int:
        return len(self.entries) * self.patches_per_subject

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream (call before each epoch, with non-persistent workers or in the main process)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The item's generator, seeded by ``(seed, epoch, rank, index)``."""
        ss = np.random.SeedSequence([self.seed, self.epoch, self.rank, index])
        return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))

    # ------------------------------------------------------------------------------------------ loading
    def load_subject(self, index: int) -> dict[str, Any]:
        """Full-volume arrays of a subject: ``image`` (None if absent), ``edge``, ``labels``, ``targets``, ``brain``.

        ``edge`` is ``"missing"`` when the subject has an image but no edge file; it is computed when a real patch
        needs it (precompute ``brain_edge.nii.gz`` for real training: the recipe takes seconds per volume).
        """
        e = self.entries[index % len(self.entries)]
        compiled, label_file = self.declarations[e.folder]
        if self.task == "strip":
            img_path, lab_path = find_file(e.path, "head"), find_file(e.path, "mask")
            if lab_path is None:  # label maps only (whole-head maps for synthesis)
                lab_path = e.path / label_file if label_file else find_file(e.path, "parc")
        else:
            img_path = find_file(e.path, "brain")
            lab_path = e.path / label_file if label_file else (find_file(e.path, "parc") or find_file(e.path, "tissue"))
        if lab_path is None or not lab_path.is_file():
            raise FileNotFoundError(f"{e.path}: no label file ({FILE_ALIASES['parc'] + FILE_ALIASES['mask']})")
        if lab_path.name == FILE_ALIASES["tissue"][0] and compiled.declaration.label_space != "tissue":
            compiled = self.tissue_fallback
        labels = np.rint(_load(lab_path)).astype(np.int32)
        image = None if img_path is None else _load(img_path).astype(np.float32)
        brain = image > 0 if (image is not None and self.task == "parc") else None
        if self.task == "strip" and find_file(e.path, "mask") is not None:
            targets = (labels > 0).astype(np.int16)
        else:
            targets = compiled.to_targets(labels, brain)
            if self.task == "strip":  # whole-head label map: brain = anything that is not background
                targets = (targets != 0).astype(np.int16)
        edge = None
        if image is not None and self.task == "parc":
            edge_path = find_file(e.path, "edge")
            edge = _load(edge_path).astype(np.float32) if edge_path else "missing"
        coords = None
        if self.coords:
            coords_path = find_file(e.path, "coords")
            if coords_path is None:
                raise FileNotFoundError(f"{e.path}: atlas-guided training needs a coords.nii(.gz) file")
            coords = np.moveaxis(_load(coords_path).astype(np.float32), -1, 0)
        return {
            "coords": coords,
            "image": image,
            "edge": edge,
            "labels": labels,
            "targets": targets,
            "brain": brain,
            "compiled": compiled,
        }

    def _centre(self, targets: np.ndarray, gen: torch.Generator) -> list[int]:
        if float(torch.rand((), generator=gen)) < self.foreground_prob:
            fg = np.flatnonzero(targets.ravel() != 0)
            if fg.size:
                k = int(torch.randint(0, fg.size, (), generator=gen))
                return [int(i) for i in np.unravel_index(fg[k], targets.shape)]
        return [int(torch.randint(0, n, (), generator=gen)) for n in targets.shape]

    # ------------------------------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> dict[str, Any]:
        gen = self.generator(index)
        e = self.entries[index % len(self.entries)]
        vol = self.load_subject(index)
        centre = self._centre(vol["targets"], gen)
        synthetic = vol["image"] is None or float(torch.rand((), generator=gen)) < self.synth_ratio
        if synthetic:
            image, target = self._synthetic_patch(index, vol, centre, gen)
        else:
            image, target = self._real_patch(vol, centre, gen)
        return {"image": image, "target": target, "synthetic": synthetic, "subject": f"{e.folder}/{e.subject}"}

    def _finish(
        self, img: torch.Tensor, edge: torch.Tensor | None, coords: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        chans = [img] if edge is None else [img, edge]
        return torch.stack([c.float() for c in chans + (coords or [])])

    def _real_patch(self, vol: dict[str, Any], centre: list[int], gen: torch.Generator):
        P, shape = self.patch_size, vol["targets"].shape
        norm, brain = self.normalisation, vol["brain"]
        img = _normalise(vol["image"], norm, brain)
        if self.augment is None:
            if isinstance(vol["edge"], str):  # no edge file: reference recipe on the fly (slow: ~8 s for 256²×160)
                vol["edge"] = _edge_array(vol["image"])
            start = window_start(centre, shape, P, self.margin)
            edge = None if vol["edge"] is None else crop_pad(_normalise(vol["edge"], norm, brain), start, P)
            coords = None if vol["coords"] is None else [crop_pad(c, start, P, OUTSIDE_TEMPLATE) for c in vol["coords"]]
            return self._finish(crop_pad(img, start, P), edge, coords), crop_pad(
                vol["targets"].astype(np.int64), start, P, IGNORE
            )
        grid = random_spatial_grid(shape, (P,) * 3, gen, self.augment, tuple(float(c) for c in centre))
        target = resample(torch.from_numpy(vol["targets"].astype(np.float32) + 1), grid, "nearest").round().long() - 1
        # the +1 shift makes "outside the volume" (0 after zero padding) come out as IGNORE (-1)
        inside = resample(torch.ones(shape), grid, "nearest") > 0
        patch = resample(torch.from_numpy(img), grid, "bilinear")
        patch = augment_intensity(
            patch, gen, self.augment, mask=(target != 0) & inside if self.task == "parc" else None
        )
        mask = ((target != 0) & inside).numpy()
        patch = torch.from_numpy(_normalise(patch.numpy(), norm, mask))
        edge = torch.from_numpy(_normalise(_edge_array(patch.numpy()), norm, mask)) if self.task == "parc" else None
        return self._finish(patch, edge, self._coords_on(vol["coords"], grid, shape, gen)), target

    def _coords_on(
        self, coords: np.ndarray | None, grid: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator
    ) -> list[torch.Tensor] | None:
        """Template coordinates on a patch's sampling grid; with ``coord_noise``, displaced from the image like a
        registration error: a smooth random field, std ~ U(0, ``coord_noise``) voxels per axis, 4³ control points."""
        if coords is not None and self.coord_noise > 0:
            std = float(torch.rand((), generator=gen)) * self.coord_noise
            grid = grid + smooth_displacement(gen, std, 4, shape, grid.shape[1:4])
        return _warp_coords(coords, grid)

    def _priors(self, compiled: CompiledDeclaration, fresh: int) -> tuple[torch.Tensor, torch.Tensor]:
        """T1-like intensity priors per source label value from the tissue of its group.

        The unlabelled brain of declarations like DKT31 (``fresh`` value) is given the WM prior: it is mostly cerebral
        white matter.  Mixed-tissue groups and unknown values get a broad prior.
        """
        tog = self.registry.tissue_of_group
        tissue = {v: (int(tog[g]) if g >= 0 and tog[g] < 4 else None) for v, g in compiled.lut.items()}
        g_in = compiled.in_brain_zero
        tissue[fresh] = 3 if g_in == IGNORE else (int(tog[g_in]) if tog[g_in] < 4 else None)
        return tissue_priors(tissue, fresh + 1)

    def _synthetic_patch(self, index: int, vol: dict[str, Any], centre: list[int], gen: torch.Generator):
        P = self.patch_size
        compiled = vol["compiled"]
        labels = vol["labels"].astype(np.int64)
        fresh = int(labels.max()) + 1
        if compiled.needs_brain_mask:  # unlabelled brain (e.g. cerebral WM of DKT31 data) gets its own intensity
            brain = vol["brain"] if vol["brain"] is not None else vol["targets"] != compiled.lut.get(0, IGNORE)
            labels = np.where((labels == 0) & brain, fresh, labels)
        params = self.synth_params
        priors = self._priors(compiled, fresh)
        classes = lateral_classes(fresh + 1, compiled.declaration.label_space)
        grid = random_spatial_grid(labels.shape, (P,) * 3, gen, params, tuple(map(float, centre)))
        img, lab = synthesize(torch.from_numpy(labels), gen, params, priors=priors, classes=classes, grid=grid)
        lab_np = lab.numpy()
        in_brain = lab_np == fresh
        lab_np = np.where(in_brain, 0, lab_np)
        if self.task == "strip":
            target = torch.from_numpy(compiled.to_targets(lab_np, in_brain) != 0).long()
            if float(torch.rand((), generator=gen)) < self.pseudo_brain_prob:
                img = img * pseudo_brain_mask(target, gen)
            return self._finish(torch.from_numpy(_normalise(img.numpy(), self.normalisation, None)), None), target
        target = torch.from_numpy(compiled.to_targets(lab_np, in_brain).astype(np.int64))
        if params.background_zero:  # skull-stripped look: whatever the declaration calls background is 0
            img = img * (target != 0)
        mask = (target != 0).numpy()
        img_np = _normalise(img.numpy(), self.normalisation, mask)
        edge = _normalise(_edge_array(img_np), self.normalisation, mask)
        coords = self._coords_on(vol["coords"], grid, labels.shape, gen)
        return self._finish(torch.from_numpy(img_np), torch.from_numpy(edge), coords), target


def _warp_coords(coords: np.ndarray | None, grid: torch.Tensor) -> list[torch.Tensor] | None:
    """Template coordinates ``[3, X, Y, Z]`` resampled on a deformation grid (OUTSIDE_TEMPLATE outside the volume)."""
    if coords is None:
        return None
    # shifted so that zero padding outside the volume lands on OUTSIDE_TEMPLATE
    return [resample(torch.from_numpy(c - OUTSIDE_TEMPLATE), grid, "bilinear") + OUTSIDE_TEMPLATE for c in coords]


def fully_labelled_fractions(
    dataset: PatchDataset, max_subjects: int | None = None, seed: int = 0, min_single: float = 0.99
) -> np.ndarray:
    """Class volume fractions (:func:`brainparc.train.losses.volume_fractions`) over the dataset's fully labelled
    subjects.

    A subject counts when its declaration has no missing class, reads 0 as background, and at least ``min_single`` of
    its labelled (non-background, non-ignored) voxels carry a single class: full BrainParc maps and FreeSurfer
    aparc+aseg (whose few leftover 3/42 cortex voxels are merged groups, left out of the counts) qualify; DKT31,
    aseg-only and tissue maps do not.  ``max_subjects`` caps the number of label maps read (a seeded random subset of
    the candidates), since this runs at start-up.
    """
    from brainparc.train.losses import volume_fractions

    n_cls = 107
    candidates = [
        i
        for i, e in enumerate(dataset.entries)
        if not dataset.declarations[e.folder][0].declaration.missing
        and not dataset.declarations[e.folder][0].needs_brain_mask
    ]
    if max_subjects is not None and len(candidates) > max_subjects:
        candidates = sorted(np.random.default_rng(seed).choice(candidates, max_subjects, replace=False).tolist())
    maps = []
    for i in candidates if dataset.task == "parc" else []:
        t = dataset.load_subject(i)["targets"]
        labelled = int((t > 0).sum())  # group 0 is background, -1 ignored; merged groups are ≥ 107
        single = int(((t > 0) & (t < n_cls)).sum())
        if labelled and single >= min_single * labelled:
            maps.append(t)
    if not maps:
        raise ValueError("no fully labelled subject: cannot estimate class volume fractions")
    return volume_fractions(maps, n_cls)
