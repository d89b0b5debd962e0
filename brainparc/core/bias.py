"""N4 bias-field correction through antspyx, on nibabel images in memory."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from brainparc.core.conform import otsu_threshold
from brainparc.core.io import nib_to_ants, set_ants_threads


def foreground_mask(arr: np.ndarray, zooms) -> np.ndarray:
    """Head (or brain) foreground: half the Otsu threshold of a ≈2 mm Gaussian-smoothed copy, holes filled."""
    z = np.asarray(zooms, dtype=float)
    smooth = ndi.gaussian_filter(np.asarray(arr, dtype=np.float32), sigma=np.maximum(0.5, 2.0 / z))
    return ndi.binary_fill_holes(smooth > 0.5 * otsu_threshold(smooth))


def n4(
    img: nib.spatialimages.SpatialImage,
    mask: np.ndarray | None = None,
    shrink_factor: int = 6,
    iterations: tuple[int, ...] = (50, 50, 50, 50),
    bspline_distance_mm: float = 200.0,
    nthreads: int | None = None,
) -> nib.Nifti1Image:
    """N4 bias-field correction (ANTs ``N4BiasFieldCorrection``) of a 3-D image.

    Parameters
    ----------
    img
        Image to correct (any orientation; the grid is kept).
    mask
        Voxels used to fit the bias field; default :func:`foreground_mask` (fitting on background noise biases it).
    shrink_factor, iterations, bspline_distance_mm
        N4 settings: sMRIPrep's, except a shrink factor of 6 instead of 4 (about 2x faster: 30 s instead of 65-75 s
        for a 1 mm head on 2 cores; a 200 mm B-spline field is still sampled finely at 6 mm).
    nthreads
        ITK threads (see :func:`brainparc.core.io.set_ants_threads`).

    Returns
    -------
    nibabel.Nifti1Image
        float32, same grid and affine. Negative input values are shifted so that the minimum is 0 (N4 needs
        non-negative intensities) and shifted back after correction.
    """
    import ants

    set_ants_threads(nthreads)
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
    if mask is None:
        mask = foreground_mask(data, zooms)
    shift = float(min(data.min(), 0.0))
    src = nib_to_ants(img, data - shift)
    ants_mask = nib_to_ants(img, (np.asarray(mask) > 0).astype(np.float32))
    out = ants.n4_bias_field_correction(
        src,
        mask=ants_mask,
        shrink_factor=shrink_factor,
        convergence={"iters": list(iterations), "tol": 1e-7},
        spline_param=bspline_distance_mm,
    )
    corrected = out.numpy().astype(np.float32) + shift
    res = nib.Nifti1Image(corrected, img.affine)
    res.header.set_xyzt_units("mm")
    return res
