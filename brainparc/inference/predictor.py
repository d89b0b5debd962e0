"""Run the BrainParc cascade and AutoStrip over conformed (LAS) arrays with the sliding window.

These functions take arrays already on the model grid (spec §3.1: LAS array axes fed as the network's W, H, D) and
return arrays on the same grid; conforming and un-conforming belong to the caller (``brainparc.pipeline``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from brainparc.inference.devices import autocast, resolve_device, run_with_cpu_fallback
from brainparc.inference.sliding_window import (
    FIXED_POINT,
    Reduced,
    Resample,
    plan_windows,
    sliding_window,
    windows_in_region,
)

__all__ = ["ParcellationResult", "bounding_roi", "dilated_region", "predict_brain_mask", "predict_parcellation"]

LOGGER = logging.getLogger(__name__)

#: Output indices used by inference (docs/CONTRACTS.md): BrainParc ``tissue_s``/``parc_s``, AutoStrip ``s``.
TISSUE_OUTPUT, PARC_OUTPUT, STRIP_OUTPUT = 2, 4, 0
#: Their channels: background + CSF/GM/WM, background + 106 regions, background/brain.
TISSUE_CHANNELS, PARC_CHANNELS, STRIP_CHANNELS = 4, 107, 2


@dataclass(frozen=True)
class ParcellationResult:
    """What :func:`predict_parcellation` returns, all on the input grid.

    Attributes
    ----------
    tissue_probs : np.ndarray
        float32 ``[4, X, Y, Z]`` blended tissue probabilities (background, CSF, GM, WM); background = 1 outside the ROI.
        With ``resample`` these arrays are on the resampled grid.
    tissue : np.ndarray
        int16 ``[X, Y, Z]`` argmax of ``tissue_probs``.
    parc : np.ndarray
        int16 ``[X, Y, Z]`` parcel indices 0–106 (not yet refined, see :func:`brainparc.core.postproc.refine_parcels`).
    parc_confidence : np.ndarray or None
        float32 ``[X, Y, Z]`` blended probability of the winning parcel, when requested.
    roi : tuple of slice
        The region that was predicted.
    n_windows : int
        Windows run.
    device : str
        Device the network actually ran on (``cpu`` after a CUDA out-of-memory fallback).
    """

    tissue_probs: np.ndarray
    tissue: np.ndarray
    parc: np.ndarray
    parc_confidence: np.ndarray | None
    roi: tuple[slice, ...]
    n_windows: int
    device: str


def bounding_roi(mask: np.ndarray, margin: int = 8) -> tuple[slice, slice, slice]:
    """Bounding box of the non-zero voxels of ``mask`` grown by ``margin`` voxels per side, clamped to the image.

    Examples
    --------
    >>> m = np.zeros((10, 10, 10)); m[4:6, 3, 2:9] = 1
    >>> bounding_roi(m, margin=2)
    (slice(2, 8, None), slice(1, 6, None), slice(0, 10, None))
    """
    nz = np.nonzero(np.asarray(mask))
    if nz[0].size == 0:
        raise ValueError("cannot place the sliding window: the mask (or image) has no non-zero voxel")
    return tuple(
        slice(max(0, int(ax.min()) - margin), min(size, int(ax.max()) + 1 + margin))
        for ax, size in zip(nz, mask.shape, strict=True)
    )  # type: ignore[return-value]


def dilated_region(mask: np.ndarray, roi: tuple[slice, ...], margin: int) -> np.ndarray:
    """``mask`` grown by ``margin`` voxels (6-connected steps, an L1 ball) inside ``roi``; False outside ``roi``."""
    from scipy import ndimage

    region = np.zeros(mask.shape, dtype=bool)
    crop = np.asarray(mask)[roi] != 0
    region[roi] = ndimage.binary_dilation(crop, iterations=margin) if margin > 0 else crop
    return region


def _normalise(arrays: Sequence[np.ndarray], card: dict[str, Any], mask: np.ndarray | None) -> list[np.ndarray]:
    """Apply the card's normalisation to each array independently (the official recipe z-scores each channel)."""
    from brainparc.core.intensity import normalise  # lazy: owned by preprocessing, not needed with normalise=False

    recipe = card.get("normalisation", "official-zscore")
    return [normalise(a, recipe, mask=mask) for a in arrays]


def _model_geometry(model: nn.Module) -> tuple[int, int]:
    try:
        return int(model.patch_size), int(model.valid_size)
    except AttributeError as err:
        raise TypeError("the model must define patch_size and valid_size (docs/CONTRACTS.md)") from err


def accumulator_device(device: torch.device, accum_bytes: int, free_bytes: int | None = None) -> torch.device:
    """Where the sliding-window sums live: on the GPU when they need at most half of its free memory, else on the CPU.

    On an H100 the CPU-side sums took ~17 of the 20 s of a 1 mm brainparc-lite run; on a small GPU they may not fit
    next to the network's activations. ``free_bytes`` defaults to ``torch.cuda.mem_get_info``'s free memory.
    """
    if device.type != "cuda":
        return torch.device("cpu")
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return device if accum_bytes <= free_bytes // 2 else torch.device("cpu")


def _accumulator_bytes(
    roi: Sequence[slice],
    region: torch.Tensor | None,
    channels: Sequence[int],
    accum_dtype: torch.dtype | Sequence[torch.dtype],
) -> int:
    """Size of ``sliding_window``'s sums: a float32 weight sum per ROI voxel (and an int64 index with a ``region``),
    plus one sum per output channel, in its accumulator dtype, per summed voxel (the region's, else the ROI's)."""
    roi_voxels = int(np.prod([r.stop - r.start for r in roi]))
    dtypes = [accum_dtype] * len(channels) if isinstance(accum_dtype, torch.dtype) else list(accum_dtype)
    per_voxel = sum(c * d.itemsize for c, d in zip(channels, dtypes, strict=True))
    if region is None:
        return roi_voxels * (4 + per_voxel)
    return roi_voxels * (4 + 8) + int(region.sum()) * per_voxel


def _run(
    model: nn.Module,
    image: torch.Tensor,
    outputs: Sequence[int],
    device: torch.device,
    amp: bool | None,
    forward_kwargs: dict[str, Any] | None = None,
    accum_bytes: int = 0,
    **window_kwargs: Any,
) -> tuple[tuple[torch.Tensor | Reduced, ...], str]:
    """Sliding window over ``model(batch, **forward_kwargs)`` keeping ``outputs``; CPU rerun after a CUDA OOM.

    ``accum_bytes`` estimates the accumulators' size (see :func:`accumulator_device`)."""
    patch_size, valid_size = _model_geometry(model)
    model.eval()

    def attempt(dev: torch.device) -> tuple[tuple[torch.Tensor | Reduced, ...], str]:
        model.to(dev)

        def predict(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with autocast(dev, enabled=amp):
                result = model(batch, **(forward_kwargs or {}))
            # float() is a no-op for float32 outputs; it undoes autocast's bfloat16 before accumulation.
            return tuple(result[i].float() for i in outputs)

        out_device = accumulator_device(dev, accum_bytes)
        out = sliding_window(
            predict,
            image,
            patch_size=patch_size,
            valid_size=valid_size,
            device=dev,
            out_device=out_device,
            **window_kwargs,
        )
        return out, str(dev)

    # No inference_mode around model.to(): parameters moved inside it would become inference tensors and break any
    # later training use of the model. sliding_window runs predict under inference_mode itself.
    return run_with_cpu_fallback(attempt, device)


def _window_kwargs(official_geometry: bool, overlap: float, roi: tuple[slice, ...]) -> dict[str, Any]:
    """sliding_window settings of the cascade: ours (ROI, mixed accumulators) or the official geometry."""
    if official_geometry:  # whole image, official starts and Hann; the reference summed in float64 (spec §7 item 20):
        # float32 tissue sums, fixed-point parcel probabilities (≤ 1.2e-4 from the exact blend at half the memory)
        return {
            "overlap": 0.5,
            "roi": None,
            "tiling": "official",
            "blend": "official",
            "accum_dtype": (torch.float32, FIXED_POINT),
            "skip_outside_region": True,
        }
    # 4 tissue channels are cheap in float32; the 107-channel sum is the big one (spec §3.7). A window whose valid
    # region misses the kept sums adds nothing, so skipping it changes no output (6-14 % fewer windows on adults).
    return {
        "overlap": overlap,
        "roi": roi,
        "tiling": "even",
        "accum_dtype": (torch.float32, torch.float16),
        "skip_outside_region": True,
    }


def predict_parcellation(
    model: nn.Module,
    intensity: np.ndarray,
    edge: np.ndarray,
    card: dict[str, Any],
    *,
    mask: np.ndarray | None = None,
    device: str | torch.device = "auto",
    overlap: float = 0.5,
    batch_size: int = 1,
    progress: bool | str = False,
    amp: bool | None = None,
    normalise: bool = True,
    roi_margin: int = 8,
    confidence: bool = False,
    official_geometry: bool = False,
    restrict_to_mask: bool = True,
    resample: Resample | None = None,
    coords: np.ndarray | None = None,
) -> ParcellationResult:
    """Tissue map and 106-region parcellation of one conformed, skull-stripped brain.

    Parameters
    ----------
    model : nn.Module
        BrainParc cascade (docs/CONTRACTS.md): ``[B, 2, P, P, P]`` → 6-tuple; ``tissue_s`` (index 2) and ``parc_s``
        (index 4) are used.
    intensity, edge : np.ndarray
        ``[X, Y, Z]`` brain and its Sobel edge map on the model grid (LAS).
    card : dict
        Model card; ``card["normalisation"]`` picks the recipe (``official-zscore`` or ``in-mask-zscore``).
    mask : np.ndarray, optional
        Brain mask: ROI = its bounding box plus ``roi_margin`` voxels (else the non-zero intensity's), and the
        normalisation mask for ``in-mask-zscore``.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`~brainparc.inference.devices.resolve_device`).
    overlap, batch_size, progress : see :func:`~brainparc.inference.sliding_window.sliding_window`.
    amp : bool or None
        Mixed precision: ``None`` = autocast on CUDA only (bfloat16, or float16 where bfloat16 is unsupported);
        ``True`` also on the CPU (bfloat16: about twice as fast with AMX, results move slightly); ``False`` = never.
    normalise : bool
        ``False`` when the arrays are already normalised (tests, or a caller that normalised itself).
    roi_margin : int
        Voxels added around the brain bounding box so the network also labels the background just outside it.
    confidence : bool
        Also return the winning parcel's probability.
    coords : np.ndarray, optional
        float32 ``[3, X, Y, Z]`` template coordinates (:class:`~brainparc.core.skullstrip.TemplateFit`), appended as
        channels for models whose card names an ``atlas`` (:class:`~brainparc.models.AtlasGuidedNet`).
    official_geometry : bool
        Reproduce the official tiling and Hann weighting over the whole image with float32 tissue sums and
        fixed-point parcel probabilities (the ``reference`` recipe; regression against the shipped outputs, spec
        §6.5); ignores ``overlap`` and the ROI. Memory without ``restrict_to_mask``: 107 two-byte sums over the whole
        image, 2.9 GB at 208×256×256 (an eighth of the reference's float64 on the padded volume).
    restrict_to_mask : bool
        Keep sums only for voxels within ``roi_margin`` voxels of the mask (else of the non-zero intensity): ~45 %
        less accumulator memory for a brain in its bounding box, background elsewhere; the windows whose valid
        region holds none of these voxels are skipped.
    resample : Resample, optional
        Return the maps on another grid (the input grid): blended sums resampled trilinearly, then normalised
        (tissue) or reduced to the argmax (parcels), as the reference does (spec §3.4 step 7).

    Notes
    -----
    The model is moved to the device it runs on (to the CPU after a CUDA out-of-memory fallback) and left there.

    Returns
    -------
    ParcellationResult
    """
    if intensity.shape != edge.shape or intensity.ndim != 3:
        raise ValueError(f"intensity {intensity.shape} and edge {edge.shape} must be 3-D arrays of the same shape")
    if mask is not None and mask.shape != intensity.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the image shape {intensity.shape}")
    dev = resolve_device(device)  # fail fast on a bad device string, before normalising
    roi = bounding_roi(mask if mask is not None else intensity, roi_margin)
    norm_mask = mask if mask is not None else intensity != 0
    arrays = _normalise([intensity, edge], card, norm_mask) if normalise else [intensity, edge]
    if coords is not None:  # atlas-guided models: template coordinates as extra channels, never normalised
        if coords.shape != (3, *intensity.shape):
            raise ValueError(f"coords shape {coords.shape} must be (3, *{intensity.shape})")
        arrays = [*arrays, *coords]
    image = torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))
    del arrays
    window_kwargs = _window_kwargs(official_geometry, overlap, roi)
    roi = window_kwargs["roi"] or tuple(slice(0, s) for s in intensity.shape)
    if restrict_to_mask:
        brain = mask if mask is not None else intensity != 0
        window_kwargs["region"] = torch.from_numpy(dilated_region(brain, roi, roi_margin))
    patch_size, valid_size = _model_geometry(model)
    accum_bytes = _accumulator_bytes(
        roi, window_kwargs.get("region"), (TISSUE_CHANNELS, PARC_CHANNELS), window_kwargs["accum_dtype"]
    )
    plan_args = {k: window_kwargs[k] for k in ("overlap", "roi", "tiling")}
    corners = plan_windows(intensity.shape, patch_size=patch_size, valid_size=valid_size, **plan_args)
    if window_kwargs.get("skip_outside_region") and "region" in window_kwargs:
        corners = windows_in_region(corners, window_kwargs["region"], valid_size)
    n_windows = len(corners)
    (tissue_probs, parc), used = _run(
        model,
        image,
        (TISSUE_OUTPUT, PARC_OUTPUT),
        dev,
        amp,
        forward_kwargs={"parc_b": False},  # the big-branch parcel head is never read (docs/CONTRACTS.md)
        accum_bytes=accum_bytes,
        batch_size=batch_size,
        progress=progress,
        reduce=(None, "argmax+maxprob" if confidence else "argmax"),
        resample=resample,
        **window_kwargs,
    )
    tissue_probs = tissue_probs.numpy()
    return ParcellationResult(
        tissue_probs=tissue_probs,
        tissue=tissue_probs.argmax(axis=0).astype(np.int16),
        parc=parc.labels.numpy().astype(np.int16),
        parc_confidence=None if parc.max_prob is None else parc.max_prob.numpy(),
        roi=roi,
        n_windows=n_windows,
        device=used,
    )


def predict_brain_mask(
    model: nn.Module,
    image: np.ndarray,
    card: dict[str, Any],
    *,
    mask: np.ndarray | None = None,
    device: str | torch.device = "auto",
    overlap: float = 0.5,
    batch_size: int = 1,
    progress: bool | str = False,
    amp: bool | None = None,
    normalise: bool = True,
    roi_margin: int = 8,
    official_geometry: bool = False,
) -> np.ndarray:
    """Brain probability of a conformed pseudo-brain with AutoStrip (spec §3.2).

    Parameters
    ----------
    model : nn.Module
        AutoStrip network: ``[B, 1, P, P, P]`` → ``(s, b)``; ``s`` (index 0) is a 2-class softmax over the valid region.
    image : np.ndarray
        ``[X, Y, Z]`` pseudo-brain (T1 times a dilated template mask) on the model grid.
    card : dict
        Model card; ``card["normalisation"]`` picks the recipe (``minmax``, ``official-zscore``, ``in-mask-zscore``).
    mask : np.ndarray, optional
        Region to predict (its bounding box plus ``roi_margin``) and the ``in-mask-zscore`` mask; default: the
        non-zero voxels of ``image`` (the pseudo-brain is zero outside the dilated template mask).
    device, overlap, batch_size, progress, amp, normalise, roi_margin : see :func:`predict_parcellation`.
    official_geometry : bool
        The published tiling (stride 80 over the whole image padded by 16) and plain averaging of the valid regions
        (the ``reference`` recipe); ignores ``overlap`` and the ROI.

    Returns
    -------
    np.ndarray
        float32 ``[X, Y, Z]`` probability of brain (0 outside the ROI). Thresholding, largest component and hole
        filling belong to ``brainparc.core.skullstrip``.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D, got shape {image.shape}")
    dev = resolve_device(device)
    region = mask if mask is not None else image != 0
    roi = bounding_roi(region, roi_margin)
    arr = _normalise([image], card, region)[0] if normalise else image
    tensor = torch.from_numpy(np.asarray(arr, dtype=np.float32)[None])
    geometry: dict[str, Any] = {"overlap": overlap, "roi": roi}
    if official_geometry:
        roi = tuple(slice(0, s) for s in image.shape)
        geometry = {"overlap": 0.5, "roi": None, "tiling": "official", "blend": "constant"}
    (probs,), _ = _run(
        model,
        tensor,
        (STRIP_OUTPUT,),
        dev,
        amp,
        **geometry,
        batch_size=batch_size,
        progress=progress,
        accum_dtype=torch.float32,
        reduce=None,
        accum_bytes=_accumulator_bytes(roi, None, (STRIP_CHANNELS,), torch.float32),
    )
    return probs[1].numpy()
