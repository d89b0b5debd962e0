"""Intensity normalisation recipes; a model card's ``normalisation`` key chooses one.

* ``official-zscore``: the reference recipe the official weights were trained with (spec §3.3, §7 item 4): clip at
  the 99.999th percentile of the **whole volume, background included**, then subtract the mean and divide by the
  standard deviation of the whole clipped volume.
* ``in-mask-zscore``: for our own models (spec §7 item 29): statistics inside the brain mask only, so that the field
  of view (amount of background) no longer changes the normalised intensities; background set to 0.
* ``minmax``: AutoStrip's inference recipe (clip at the 0.001/99.999 percentiles, scale to [-1, 1]).
"""

from __future__ import annotations

import numpy as np

RECIPES = ("official-zscore", "in-mask-zscore", "minmax")


def zscore_official(arr: np.ndarray) -> np.ndarray:
    """Whole-volume z-score with an upper clip at the 99.999th percentile (reference recipe), float32.

    The statistics are computed in float32 as the reference does (ANTs reads float32), which matters for the
    int16-truncated Sobel edges built on top of this.
    """
    a = np.asarray(arr, dtype=np.float32)
    # Scalars from separate calls keep float32 (a list of q would give float64 and upcast the clip).
    a = np.clip(a, np.percentile(a, 0.0), np.percentile(a, 99.999))
    std = a.std()
    if std == 0:
        return np.zeros_like(a)
    return ((a - a.mean()) / std).astype(np.float32)


def zscore_in_mask(arr: np.ndarray, mask: np.ndarray, upper_percentile: float = 99.9) -> np.ndarray:
    """Z-score using the voxels inside ``mask`` only (upper clip at ``upper_percentile`` of the masked values).

    Voxels outside the mask are set to 0, i.e. to the in-mask mean.
    """
    a = np.asarray(arr, dtype=np.float32)
    m = np.asarray(mask) > 0
    if not m.any():
        raise ValueError("empty mask: cannot normalise inside it")
    vals = a[m]
    hi = np.percentile(vals, upper_percentile)
    vals = np.minimum(vals, hi)
    mean, std = float(vals.mean()), float(vals.std())
    out = np.zeros_like(a)
    out[m] = (vals - mean) / (std if std > 0 else 1.0)
    return out


def minmax_autostrip(arr: np.ndarray) -> np.ndarray:
    """AutoStrip inference scaling: clip at the 0.001/99.999 percentiles of the whole volume, then map to [-1, 1]."""
    a = np.asarray(arr, dtype=np.float32)
    lo, hi = np.percentile(a, [0.001, 99.999])
    if hi <= lo:
        return np.zeros_like(a)
    return (2.0 * (np.clip(a, lo, hi) - lo) / (hi - lo) - 1.0).astype(np.float32)


def normalise(arr: np.ndarray, recipe: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Apply the normalisation ``recipe`` named by a model card (see module docstring)."""
    if recipe == "official-zscore":
        return zscore_official(arr)
    if recipe == "in-mask-zscore":
        if mask is None:
            raise ValueError("the 'in-mask-zscore' normalisation needs a brain mask")
        return zscore_in_mask(arr, mask)
    if recipe == "minmax":
        return minmax_autostrip(arr)
    raise ValueError(f"unknown normalisation {recipe!r}; expected one of {RECIPES}")
