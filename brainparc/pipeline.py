"""One T1w image, end to end: the chain shared by ``brainparc parcellate`` and the BIDS workflow nodes.

Stages: 1 load + validate · 2 N4 on the input grid · 3 conform to the model grid (LAS) · 4 skull strip (template
pseudo-brain refined by AutoStrip) · 5 Sobel edges · 6 BrainParc cascade · 7 parcel clean-up · 8 back to the input grid.
Each stage is a call into :mod:`brainparc.core` / :mod:`brainparc.inference`; this module only sequences them and keeps
the times.

N4 runs on the acquired grid, before any resampling, so that the BIDS App can compute it once in its own node (the
``desc-preproc_T1w`` output) and hand that image over with ``bias_correct=False``: ``brainparc parcellate`` and the
BIDS App then see the same corrected intensities and give the same parcellation.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainparc import __version__, labels
from brainparc.core.volumes import regional_volumes, rows_to_tsv
from brainparc.outputs import save_nifti_atomic, staging_dir, write_atomic, write_json_atomic

LOGGER = logging.getLogger(__name__)

#: Output file names of ``brainparc parcellate`` (all on the input grid).
OUTPUT_FILES = {
    "mask": "brain_mask.nii.gz",
    "brain": "brain.nii.gz",
    "tissue": "tissue_dseg.nii.gz",
    "tissue_probs": "tissue_probseg.nii.gz",
    "aparcaseg": "aparcaseg_dseg.nii.gz",
    "brainparc": "brainparc_dseg.nii.gz",
    "volumes": "volumes.tsv",
    "provenance": "provenance.json",
}


@dataclass(frozen=True)
class ParcellateOptions:
    """Settings of one image's run (the CLI flags of ``brainparc parcellate``)."""

    skull_strip: str = "auto"
    brain_mask: Path | None = None
    device: str = "auto"
    nthreads: int | None = None
    # Both networks: None takes each model card's ``inference`` defaults (overlap, else 0.5; bf16 autocast on CUDA, and
    # on the CPU only where the card's ``cpu_amp`` says so)
    overlap: float | None = None
    amp: bool | None = None
    bias_correct: bool = True  # False: the image is already N4-corrected on its own grid (the BIDS App's N4 node)
    recipe: str = "auto"  # brainparc.inference.recipes: "auto" (reference for official weights, else fast)
    progress: bool | str = False  # tqdm bars on stderr (registration, windows); a string labels them


@dataclass
class LoadedModels:
    """The parcellation network and the optional skull-stripping network with their cards."""

    parc: Any
    parc_card: dict[str, Any]
    strip: Any | None = None
    strip_card: dict[str, Any] | None = None


@dataclass
class ParcellationOutputs:
    """Everything one run produced, on the input grid, plus provenance."""

    mask: nib.Nifti1Image
    brain: nib.Nifti1Image
    tissue: nib.Nifti1Image
    tissue_probs: nib.Nifti1Image
    parc: nib.Nifti1Image  # BrainParc indices 0..106
    provenance: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def load_models(specs: Sequence[str]) -> LoadedModels:
    """Load the weights named on the command line (``default``, ``atlas``, paths, or bundled names), one per task.

    Without a skull-stripping model (the default), whole heads get the warped template brain mask
    (:func:`~brainparc.core.skullstrip.strip_skull`): measured better than the bundled AutoStrip-lite on every
    reference.
    """
    from brainparc.models import DEFAULT_MODELS, load

    names = [name for spec in specs for name in (DEFAULT_MODELS if spec == "default" else (spec,))]
    by_task: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name in names:
        model, card = load(name)
        task = card.get("task")
        if task in by_task:
            raise ValueError(f"two {task!r} models given ({by_task[task][1].get('preset')} and {name}); give one")
        by_task[task] = (model, card)
    if "parc" not in by_task:
        raise ValueError("no parcellation model given: pass --model default or --model PATH to BrainParc weights")
    strip = by_task.get("strip", (None, None))
    return LoadedModels(by_task["parc"][0], by_task["parc"][1], strip[0], strip[1])


class _Timer:
    """Collects wall time per stage and logs each stage as it starts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        LOGGER.info("Stage: %s", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


def _model_entry(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The provenance record of one model: identity, plus the card's ``status`` and recipe (shown by the reports)."""
    if card is None:
        return None
    entry = {k: card.get(k) for k in ("preset", "task", "source", "sha256", "version", "normalisation", "spacing_mm")}
    training = card.get("training") or {}
    entry.update(
        status=card.get("status"), recipe=training.get("recipe") or training.get("origin"), note=training.get("note")
    )
    return entry


def _progress(opts: ParcellateOptions, what: str) -> bool | str:
    """The ``progress`` argument of one stage: off, or a bar labelled ``what`` (after the options' own label)."""
    if not opts.progress:
        return False
    return f"{opts.progress}: {what}" if isinstance(opts.progress, str) else what


def _template_coordinates(
    card: dict[str, Any],
    stripped: Any,
    brain: nib.Nifti1Image,
    timer: _Timer,
    opts: ParcellateOptions,
    syn_iterations: tuple[int, ...],
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Template coordinates of the model grid for atlas-guided models (``card["atlas"]``), with their provenance.

    One registration per image: the skull-strip stage's template registration when it ran (whole heads) and the
    model grid is its grid; otherwise (skull-stripped input, a user mask, or a native-grid strip) the brain template
    is registered to the skull-stripped brain here with ``syn_iterations`` (the recipe's), and the cost is recorded.
    """
    from brainparc.core.skullstrip import register_template

    if not card.get("atlas"):
        return None, None
    fit = stripped.registration
    reused = fit is not None and fit.coords.shape[1:] == brain.shape
    if not reused:
        with timer.stage("template_registration"):
            fit = register_template(brain, template="brain", syn_iterations=syn_iterations, nthreads=opts.nthreads)
    entry = {**card["atlas"], "template": "MNI ICBM 2009a (nilearn)", "registration": fit.template}
    entry.update(shared_with_skull_strip=reused, registration_s=fit.seconds)
    return fit.coords, entry


def inference_settings(
    card: dict[str, Any], opts: ParcellateOptions, cuda_amp: bool = True
) -> tuple[float, bool | None]:
    """Window overlap and autocast setting: the options when given, else the model card's defaults (autocast on CUDA
    only with ``cuda_amp``, the recipe's setting)."""
    defaults = card.get("inference") or {}
    overlap = opts.overlap if opts.overlap is not None else float(defaults.get("overlap", 0.5))
    amp = opts.amp if opts.amp is not None else (True if defaults.get("cpu_amp") else (None if cuda_amp else False))
    return overlap, amp


def _autocast_used(amp: bool | None, device: str) -> bool:
    """Whether the network ran under autocast (``None`` = on CUDA only)."""
    return bool(amp) or (amp is None and device.startswith("cuda"))


def parcellate_image(
    img: nib.spatialimages.SpatialImage, models: LoadedModels, opts: ParcellateOptions
) -> ParcellationOutputs:
    """Skull-strip and parcellate one validated T1w image; every output is returned on ``img``'s grid.

    With ``opts.bias_correct`` (default) ``img`` is N4-corrected on its own grid first when the recipe has N4; pass
    ``bias_correct=False`` for an image that already is (the result of :func:`brainparc.core.bias.n4` on the same
    grid). Every step around the networks follows the :class:`~brainparc.inference.recipes.Recipe` of ``opts.recipe``.
    """
    import torch

    from brainparc.core.bias import n4
    from brainparc.core.conform import conform, unconform
    from brainparc.core.edges import sobel_edges
    from brainparc.core.postproc import fill_brain, label_csf_shell, refine_parcels
    from brainparc.core.skullstrip import strip_skull
    from brainparc.inference import predict_brain_mask, predict_parcellation, resolve_device, set_threads
    from brainparc.inference.recipes import recipe_for
    from brainparc.inference.sliding_window import Resample
    from brainparc.models import TissueFromParcels
    from brainparc.reports.qc import mask_label_agreement

    set_threads(opts.nthreads)
    device = resolve_device(opts.device)
    recipe = recipe_for(models.parc_card, opts.recipe)
    timer = _Timer()
    head = img
    if opts.bias_correct and recipe.bias_correct:
        with timer.stage("bias_correction"):
            head = n4(img, nthreads=opts.nthreads)
    spacing = models.parc_card.get("spacing_mm")
    grid = {"crop_to_head": recipe.crop_to_head, "anchor": recipe.grid_anchor, "antialias": recipe.antialias}
    with timer.stage("conform"):  # the skull-strip grid: the input grid reoriented, or already the model grid
        conformed = conform(head, None if recipe.strip_native_grid else spacing, **grid)
        work = conformed.img
    user_mask = None
    if opts.brain_mask is not None:
        mask_img = nib.load(os.fspath(opts.brain_mask))
        if mask_img.shape[:3] != img.shape[:3] or not np.allclose(mask_img.affine, img.affine, atol=1e-3):
            raise ValueError(f"--brain-mask {opts.brain_mask} is not on the T1w grid (shape/affine differ)")
        user_mask = conformed.transform.to_model_grid(np.asarray(mask_img.dataobj) > 0, order=0)

    refine = None
    strip_overlap, strip_amp = inference_settings(models.strip_card or {}, opts, recipe.cuda_amp)
    if models.strip is not None:

        def refine(arr: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
            return predict_brain_mask(
                models.strip,
                arr,
                models.strip_card,
                device=device,
                overlap=strip_overlap,
                amp=strip_amp,
                progress=_progress(opts, "skull-strip windows"),
                official_geometry=recipe.strip_official_tiling,
            )

    with timer.stage("skull_strip"):
        stripped = strip_skull(
            work,
            mode=opts.skull_strip,
            mask=user_mask,
            refine=refine,
            nthreads=opts.nthreads,
            cleanup=recipe.strip_cleanup,
            progress=_progress(opts, "registration"),
        )
    strip_provenance = {"mode": opts.skull_strip, "method": stripped.method}
    if stripped.method == "pseudo-brain+refine":  # the network ran: with which settings
        strip_provenance.update(
            overlap=0.5 if recipe.strip_official_tiling else strip_overlap,
            autocast=_autocast_used(strip_amp, device.type),
        )
    if stripped.method == "template":
        LOGGER.info("brain mask: the registered template brain mask (no skull-stripping network given)")
    mask = np.asarray(stripped.mask.dataobj) > 0
    overlap, amp = inference_settings(models.parc_card, opts, recipe.cuda_amp)
    brain, parc_mask, resample, model_grid = stripped.brain, mask, None, conformed.transform
    if recipe.strip_native_grid:  # the brain to the model grid; the network's sums come back trilinearly
        with timer.stage("conform_brain"):
            on_model_grid = conform(stripped.brain, spacing, **grid)
            brain, model_grid = on_model_grid.img, on_model_grid.transform
            parc_mask = model_grid.to_model_grid(mask.astype(np.uint8), order=0) > 0
            resample = Resample(tuple(model_grid.scale), tuple(model_grid.offset), model_grid.las_shape)
    coords, atlas_provenance = _template_coordinates(
        models.parc_card, stripped, brain, timer, opts, recipe.atlas_syn_iterations
    )
    with timer.stage("sobel_edges"):
        edges = sobel_edges(brain, dtype=np.dtype(recipe.edge_dtype))
    with timer.stage("parcellation"):
        result = predict_parcellation(
            TissueFromParcels(models.parc, labels.dk_struct().tissue_of) if recipe.tissue == "parcels" else models.parc,
            np.asarray(brain.dataobj, dtype=np.float32),
            np.asarray(edges.dataobj, dtype=np.float32),
            models.parc_card,
            mask=parc_mask,
            device=device,
            overlap=overlap,
            amp=amp,
            progress=_progress(opts, "parcellation windows"),
            roi_margin=recipe.region_margin,
            official_geometry=recipe.official_tiling,
            resample=resample,
            coords=coords,
        )
    with timer.stage("postprocess"):  # results are on the skull-strip grid
        mask_vs_labels = mask_label_agreement(mask, result.parc)  # before anything is masked or filled
        parc = refine_parcels(result.parc) if recipe.refine == "independent" else result.parc
        if recipe.mask_labels:
            parc = fill_brain(parc, mask)
        tissue_probs = result.tissue_probs
        if stripped.csf_shell is not None:  # the output mask is intracranial: brain + extra-cerebral CSF
            parc, tissue_probs = label_csf_shell(parc, tissue_probs, stripped.csf_shell)
            mask = mask | stripped.csf_shell
    with timer.stage("unconform"):
        out_mask = unconform(mask.astype(np.uint8), conformed, order=0)
        out_brain = unconform(np.asarray(stripped.brain.dataobj, dtype=np.float32), conformed, order=1)
        out_parc = unconform(parc.astype(np.int16), conformed, order=0)
        if recipe.refine == "sequential":  # the reference's order-dependent clean-up, on the final grid
            refined = refine_parcels(np.asarray(out_parc.dataobj), sequential=True)
            out_parc = nib.Nifti1Image(refined, out_parc.affine, out_parc.header)
        probs = np.moveaxis(tissue_probs, 0, -1).astype(np.float32)
        out_probs = unconform(probs, conformed, order=1)
        if recipe.tissue == "parcels":  # the tissue class of each final parcel: the two maps agree voxel for voxel
            tissue = labels.dk_struct().to_tissue(np.asarray(out_parc.dataobj))
        else:
            tissue = np.argmax(np.asarray(out_probs.dataobj), axis=-1).astype(np.int16)
        if recipe.mask_labels:
            tissue *= np.asarray(out_mask.dataobj) > 0
        out_tissue = nib.Nifti1Image(tissue.astype(np.int16), img.affine, out_mask.header)
        out_tissue.header.set_data_dtype(np.int16)

    provenance = {
        "brainparc_version": __version__,
        "models": {"parcellation": _model_entry(models.parc_card), "skull_strip": _model_entry(models.strip_card)},
        "device": result.device,
        "requested_device": opts.device,
        "nthreads": torch.get_num_threads(),  # the value used (opts.nthreads, else torch's default)
        "bias_correction": (
            "input already n4-corrected"
            if not opts.bias_correct
            else "n4 (input grid)"
            if recipe.bias_correct
            else "none (recipe)"
        ),
        "inference_recipe": recipe.to_dict(),
        "skull_strip": strip_provenance,
        "atlas": atlas_provenance,
        "mask_vs_labels": mask_vs_labels,
        "model_grid": {"spacing_mm": list(model_grid.spacing), "shape": list(model_grid.out_shape)},
        "windows": result.n_windows,
        "overlap": 0.5 if recipe.official_tiling else overlap,
        "autocast": _autocast_used(amp, result.device),
        "timings_s": timer.seconds,
        "python": platform.python_version(),
    }
    return ParcellationOutputs(out_mask, out_brain, out_tissue, out_probs, out_parc, provenance)


def volume_rows(parc: np.ndarray, tissue: np.ndarray, mask: np.ndarray, zooms: Sequence[float]) -> list[dict[str, Any]]:
    """Per-label volumes (mm³) plus summary rows: intracranial (brain mask), CSF, GM, WM and GM+WM totals."""
    rows = regional_volumes(parc, labels.dk_struct(), zooms)
    voxel = float(np.prod(np.asarray(zooms, dtype=float)[:3]))
    counts = np.bincount(np.asarray(tissue, dtype=np.int64).ravel(), minlength=4)
    totals = {
        "Total intracranial (brain mask)": int(np.count_nonzero(mask)),
        "Tissue CSF": int(counts[1]),
        "Tissue GM": int(counts[2]),
        "Tissue WM": int(counts[3]),
        "Brain (GM+WM)": int(counts[2] + counts[3]),
    }
    for name, n in totals.items():
        rows.append(
            {
                "index": "n/a",
                "name": name,
                "abbreviation": "n/a",
                "freesurfer_id": "n/a",
                "voxels": n,
                "volume_mm3": round(n * voxel, 3),
            }
        )
    return rows


def write_outputs(out: ParcellationOutputs, outdir: str | os.PathLike) -> list[Path]:
    """Write the outputs of :func:`parcellate_image` into ``outdir`` atomically (all files or none)."""
    table = labels.dk_struct()
    parc = np.asarray(out.parc.dataobj).astype(np.int16)
    fs = nib.Nifti1Image(table.to_freesurfer(parc).astype(np.int16), out.parc.affine, out.parc.header)
    fs.header.set_data_dtype(np.int16)
    zooms = out.mask.header.get_zooms()[:3]
    rows = volume_rows(parc, np.asarray(out.tissue.dataobj), np.asarray(out.mask.dataobj), zooms)
    outdir = Path(outdir)
    with staging_dir(outdir) as stage:
        save_nifti_atomic(out.mask, stage / OUTPUT_FILES["mask"])
        save_nifti_atomic(out.brain, stage / OUTPUT_FILES["brain"])
        save_nifti_atomic(out.tissue, stage / OUTPUT_FILES["tissue"])
        save_nifti_atomic(out.tissue_probs, stage / OUTPUT_FILES["tissue_probs"])
        save_nifti_atomic(fs, stage / OUTPUT_FILES["aparcaseg"])
        save_nifti_atomic(out.parc, stage / OUTPUT_FILES["brainparc"])
        write_atomic(stage / OUTPUT_FILES["volumes"], rows_to_tsv(rows))
        write_json_atomic(stage / OUTPUT_FILES["provenance"], out.provenance)
    out.files = [outdir / name for name in OUTPUT_FILES.values()]
    return out.files


def run_parcellate(
    t1w: str | os.PathLike, outdir: str | os.PathLike, model_specs: Sequence[str], opts: ParcellateOptions
) -> ParcellationOutputs:
    """``brainparc parcellate``: load and validate ``t1w``, load the models, run, write ``outdir``."""
    from brainparc.core.io import load_t1w

    start = time.perf_counter()
    img = load_t1w(t1w)  # validated; a 4-D file with one volume comes back 3-D
    models = load_models(model_specs)
    out = parcellate_image(img, models, opts)
    out.provenance["input"] = os.fspath(t1w)
    out.provenance["timings_s"]["total"] = round(time.perf_counter() - start, 3)
    write_outputs(out, outdir)
    return out
