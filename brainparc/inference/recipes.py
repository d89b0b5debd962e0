"""Inference recipes: every choice around the networks that changes outputs, in one table.

``reference`` reproduces the published inference scripts step for step (``Step02_BrainParc.py`` and
``Step02_AutoStrip_Skull_Stripping.py``; spec §3.2, §3.4, §3.5) so that the official weights give the published
pipeline's outputs; it is chosen automatically for official checkpoints. ``fast`` is our own recipe (brain-box tiling,
compact sums, masking, N4) and the default for our weights. :mod:`brainparc.pipeline` reads the fields; nothing else
decides these steps.

Where the published code has a bug (spec §7) the reference recipe keeps our fix (docs/recipes.md): physical-space
resampling back to the input grid instead of the size-based one (item 23), float32 sums instead of float64 (item 20;
relative difference ~1e-7), the sums kept only within ``region_margin`` voxels of the brain (item 20: the published
float64 sums over the whole padded field of view need 24-41 GB), and no temporary files next to the input (item 21).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RECIPES", "RECIPE_CHOICES", "Recipe", "recipe_for"]


@dataclass(frozen=True)
class Recipe:
    """How one image is pre-processed, tiled, blended, resampled and cleaned around the networks.

    Attributes
    ----------
    name
        ``"fast"`` or ``"reference"``.
    bias_correct
        N4 on the input grid before everything (the published inference has none).
    crop_to_head
        Model grid cropped to the head plus 10 mm (z-score statistics and tiling over the crop) instead of the whole
        field of view.
    grid_anchor
        Resampled model grid: ``"centre"`` (same field-of-view centre as the input) or ``"origin"`` (first voxel
        centre kept, SimpleITK's ``ResampleImageFilter`` with the input origin, as the published script).
    antialias
        Gaussian pre-filter before down-sampling to the model grid (SimpleITK's linear resampling has none).
    edge_dtype
        Sobel edge map of the brain on the model grid: ``"int16"`` (truncated, as the training files) or ``"float32"``
        (what the published script recomputes on the resampled brain).
    official_tiling
        Parcellation windows: stride 80 over the whole padded image, the Hann(160) window of the padded output
        (published), instead of windows spread evenly over the brain box with sin² weights on the valid region.
    region_margin
        Sums kept only for model-grid voxels within this many voxels (6-connected steps) of the brain (memory);
        background beyond. Windows whose valid region holds none of them are skipped, and the windows are spread
        over the brain's bounding box grown by this margin. With ``mask_labels`` nothing outside the mask is kept
        but the tissue probabilities, so ``fast`` keeps one voxel (the neighbours the trilinear resampling of
        ``tissue_probseg`` back to the input grid reads at the mask border).
    resample_probabilities
        Back to the input grid: trilinear resampling of the blended probability sums, then argmax (published), or
        argmax on the model grid and nearest neighbour (fast).
    refine
        Parcel clean-up (:func:`brainparc.core.postproc.refine_parcels`): ``"independent"`` (order-free, on the model
        grid) or ``"sequential"`` (the published order, ties kept, on the final grid).
    mask_labels
        Parcels and tissue set to 0 outside the brain mask.
    tissue
        Where the tissue maps come from: ``"network"`` (the cascade's tissue head, published) or ``"parcels"`` (the
        parcel probabilities summed per tissue class, and ``tissue_dseg`` the tissue class of each final parcel: the
        tissue map never contradicts the parcellation; :mod:`brainparc.models.tissue`).
    strip_native_grid
        AutoStrip on the input grid (reoriented only) instead of the model grid.
    strip_official_tiling
        AutoStrip windows: stride 80 over the whole padded image, plain average (published), instead of windows
        spread evenly over the pseudo-brain box with the card's overlap and sin² weights.
    strip_cleanup
        Brain mask from the AutoStrip probability: ``"fill-holes"`` (largest component, holes filled, inside the
        pseudo-brain mask) or ``"largest-component"`` (argmax and largest 26-connected component, as published).
    cuda_amp
        bf16 autocast on CUDA unless the user says otherwise (the published inference runs fp32).
    atlas_syn_iterations
        SyN iterations per level (ANTs shrink factors 4, 2, 1 of the 2.5 mm registration grid;
        :func:`~brainparc.core.skullstrip.register_template`) of the brain-template registration that places an
        atlas-guided model's prior on a skull-stripped input (whole heads reuse the skull-strip stage's registration).
        No published counterpart (the official models have no atlas): the same in both recipes.
    """

    name: str
    bias_correct: bool
    crop_to_head: bool
    grid_anchor: str
    antialias: bool
    edge_dtype: str
    official_tiling: bool
    region_margin: int
    resample_probabilities: bool
    refine: str
    mask_labels: bool
    tissue: str
    strip_native_grid: bool
    strip_official_tiling: bool
    strip_cleanup: str
    cuda_amp: bool
    atlas_syn_iterations: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """All fields, for provenance."""
        return asdict(self)


#: A third SyN level at the registration's full 2.5 mm (dev Mindboggle 12: DKT31 0.706 -> 0.717, deep grey 0.747 ->
#: 0.761, +2.7 s; docs/recipes.md).
ATLAS_SYN_ITERATIONS = (40, 20, 10)

RECIPES: dict[str, Recipe] = {
    "fast": Recipe(
        name="fast",
        bias_correct=True,
        crop_to_head=True,
        grid_anchor="centre",
        antialias=True,
        edge_dtype="int16",
        official_tiling=False,
        region_margin=1,  # a ring for the interpolation back to the input grid; fewer windows than 8, same dev Dice
        resample_probabilities=False,
        refine="independent",
        mask_labels=True,
        tissue="parcels",
        strip_native_grid=False,
        strip_official_tiling=False,
        strip_cleanup="fill-holes",
        cuda_amp=True,
        atlas_syn_iterations=ATLAS_SYN_ITERATIONS,
    ),
    "reference": Recipe(
        name="reference",
        bias_correct=False,
        crop_to_head=False,
        grid_anchor="origin",
        antialias=False,
        edge_dtype="float32",
        official_tiling=True,
        region_margin=12,
        resample_probabilities=True,
        refine="sequential",
        mask_labels=False,
        tissue="network",
        strip_native_grid=True,
        strip_official_tiling=True,
        strip_cleanup="largest-component",
        cuda_amp=False,
        atlas_syn_iterations=ATLAS_SYN_ITERATIONS,
    ),
}

#: Values of ``--recipe``: ``auto`` picks ``reference`` for official checkpoints, else ``fast``.
RECIPE_CHOICES = ("auto", *RECIPES)


def recipe_for(card: Mapping[str, Any], requested: str = "auto") -> Recipe:
    """The recipe of a run: ``requested`` by name, or for ``auto`` the parcellation card's natural one.

    >>> recipe_for({"source": "official"}).name, recipe_for({"source": "bundled"}).name
    ('reference', 'fast')
    >>> recipe_for({"source": "official"}, "fast").name
    'fast'
    """
    if requested == "auto":
        return RECIPES["reference" if card.get("source") == "official" else "fast"]
    try:
        return RECIPES[requested]
    except KeyError:
        raise ValueError(f"unknown recipe {requested!r}; expected one of {RECIPE_CHOICES}") from None
