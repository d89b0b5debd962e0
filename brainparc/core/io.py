"""Loading and validating T1w inputs, and in-memory nibabel <-> ANTs conversion.

``load_t1w`` is the only function in :mod:`brainparc.core` that touches a path; everything else works on nibabel
images. Validation failures raise :class:`InputError` (a ``ValueError``) with a one-line message that the CLI maps to
exit code 3.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import ants

LOGGER = logging.getLogger(__name__)

#: Largest voxel edge (mm) accepted on every axis; beyond this the brain is a handful of voxels.
MAX_VOXEL_MM = 3.0
#: Slice thickness (mm) from which a warning is emitted (thick clinical stacks are still processed).
THICK_SLICE_MM = 2.0
#: Smallest accepted number of voxels along any axis.
MIN_AXIS_VOXELS = 32

# ITK physical space is LPS, nibabel's is RAS: flip the first two world axes.
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class InputError(ValueError):
    """The input image cannot be processed; the message is one line and says what is wrong."""


def load_t1w(path: str | os.PathLike) -> nib.spatialimages.SpatialImage:
    """Load a T1w image and validate it.

    Parameters
    ----------
    path
        NIfTI-1/2 or MGH/MGZ file.

    Returns
    -------
    A 3-D nibabel image (a 4-D file with one volume is squeezed to 3-D) whose data are fully read, so that a truncated
    file fails here and not in the middle of the pipeline.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)  # force the read: catches truncated gzip / short files
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, OSError, zlib.error, ...)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path.name}: {msg}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        hdr = img.header.copy()
        hdr.set_data_shape(data.shape)
        img = img.__class__(data, img.affine, hdr)
    else:  # MGH/MGZ and other formats: a plain NIfTI-1 image on the same grid
        img = nib.Nifti1Image(data, img.affine)
        img.header.set_xyzt_units("mm")
    validate_t1w(img)
    return img


def validate_t1w(img: nib.spatialimages.SpatialImage) -> None:
    """Check that ``img`` is a usable 3-D T1w image; raise :class:`InputError` otherwise.

    Checks: 3-D (or 4-D with one volume), invertible affine, at least ``MIN_AXIS_VOXELS`` voxels per axis, voxels not
    larger than ``MAX_VOXEL_MM`` on every axis (one logged warning for ``THICK_SLICE_MM`` or more along some axis),
    finite values, not constant/all zero.
    """
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"expected a 3-D T1w image, got shape {tuple(img.shape)}")
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("the image affine is singular or not finite; fix the header (qform/sform)")
    if min(shape) < MIN_AXIS_VOXELS:
        raise InputError(f"image too small: shape {tuple(shape)}, need at least {MIN_AXIS_VOXELS} voxels per axis")
    zooms = voxel_sizes(img)
    if np.all(zooms > MAX_VOXEL_MM):
        raise InputError(f"voxels too large ({_fmt(zooms)} mm): need at most {MAX_VOXEL_MM} mm along some axis")
    message = coarse_voxels_message(zooms)
    if message:
        LOGGER.warning(message)
    data = np.asanyarray(img.dataobj)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"unsupported data type {data.dtype}; expected real numbers")
    n_bad = int(np.count_nonzero(~np.isfinite(data))) if np.issubdtype(data.dtype, np.floating) else 0
    if n_bad:
        raise InputError(f"image contains {n_bad} NaN/Inf voxels")
    if not np.any(data):
        raise InputError("image is all zeros")
    if data.min() == data.max():
        raise InputError(f"image is constant (every voxel = {data.min()})")


def voxel_sizes(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Voxel edge lengths (mm) from the affine, float32 noise rounded away (3.0000002 is 3)."""
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return np.where(np.abs(zooms - np.round(zooms, 2)) < 1e-4, np.round(zooms, 2), zooms)


def coarse_voxels_message(zooms: np.ndarray) -> str | None:
    """The warning for voxels of ``THICK_SLICE_MM`` or more along some axis (``None`` below).

    >>> coarse_voxels_message(np.array([1.0, 1.0, 3.0]))
    'thick slices (1x1x3 mm): results will be less accurate; processing anyway'
    >>> coarse_voxels_message(np.array([2.0, 2.0, 2.0]))
    'coarse voxels (2x2x2 mm): results will be less accurate; processing anyway'
    """
    if not np.any(zooms >= THICK_SLICE_MM):
        return None
    what = "coarse voxels" if np.all(zooms >= THICK_SLICE_MM) else "thick slices"
    return f"{what} ({_fmt(zooms)} mm): results will be less accurate; processing anyway"


def _fmt(zooms: np.ndarray) -> str:
    return "x".join(f"{z:.3g}" for z in zooms)


def nib_to_ants(img: nib.spatialimages.SpatialImage, data: np.ndarray | None = None) -> ants.ANTsImage:
    """Convert a 3-D nibabel image (or ``data`` on its grid) to an ANTs image in memory, float32.

    ITK stores origin/direction in LPS coordinates; nibabel affines map to RAS. The conversion flips x and y.
    """
    import ants

    arr = np.asarray(img.dataobj if data is None else data, dtype=np.float32)
    lps = _LPS @ np.asarray(img.affine, dtype=float)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        np.ascontiguousarray(arr), origin=lps[:3, 3].tolist(), spacing=spacing.tolist(), direction=direction
    )


def ants_affine(ants_img: ants.ANTsImage) -> np.ndarray:
    """The nibabel (RAS) voxel-to-world affine of an ANTs image."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(ants_img.direction) * np.asarray(ants_img.spacing)[None, :]
    lps[:3, 3] = ants_img.origin
    return _LPS @ lps


def ants_to_nib(ants_img: ants.ANTsImage, dtype: np.dtype | type = np.float32) -> nib.Nifti1Image:
    """Convert an ANTs image to a nibabel NIfTI image (RAS affine), same array axis order."""
    img = nib.Nifti1Image(np.asarray(ants_img.numpy(), dtype=dtype), ants_affine(ants_img))
    img.header.set_xyzt_units("mm")
    return img


def set_ants_threads(nthreads: int | None) -> None:
    """Set the ITK/ANTs thread count through ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``.

    ITK reads the variable when its global thread pool is first used, so call this before the first ANTs call of the
    process (the CLI does it at start-up); later calls only affect new processes.
    """
    if nthreads is not None and nthreads > 0:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(nthreads))
