"""Conform an input image to the network grid (LAS, model spacing, cropped to the head) and back.

Geometry
--------
1. Reorient the array to LAS (ANTs ``RPI``, spec §3.1) by an exact index permutation/flip (``nibabel.orientations``);
   ``as_closest_canonical`` (RAS) would mirror the brain for the network.
2. Optionally resample to an isotropic ``spacing``. The output axes keep the input's (possibly oblique) directions, so
   the voxel-to-voxel map between the reoriented input and the output is a per-axis scale and shift
   ``x_in = scale * j_out + offset``: no rotation is interpolated. The output field of view is centred on the input's
   (no half-voxel shift, spec §7 item 23), or with ``anchor="origin"`` starts at the input's first voxel centre
   (SimpleITK's resampling with the input origin, as the published scripts do).
3. Optionally crop to the head (foreground bounding box plus a margin) - this only adds an integer index shift.

:class:`GridTransform` records all of this; :func:`unconform` maps arrays back to the input grid by physical-space
resampling (``scipy.ndimage.affine_transform`` with the composed voxel-to-voxel affine, which is ``map_coordinates``
on an affine coordinate grid) or, when no resampling happened, by an exact index permutation/flip/pad.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage as ndi

LOGGER = logging.getLogger(__name__)

NETWORK_AXCODES = ("L", "A", "S")


@dataclass(frozen=True)
class GridTransform:
    """How a conformed (model-grid) array relates to the input grid.

    Attributes
    ----------
    in_shape, in_affine
        The input image's 3-D shape and affine.
    ornt
        nibabel orientation transform from the input array to the LAS array.
    las_shape
        Shape of the input after reorientation to LAS (before resampling or cropping).
    scale, offset
        Per-axis map from model-grid index j to reoriented-input index x: ``x = scale * j + offset``.
    out_shape, out_affine
        The model grid.
    """

    in_shape: tuple[int, int, int]
    in_affine: np.ndarray
    ornt: np.ndarray
    las_shape: tuple[int, int, int]
    scale: np.ndarray
    offset: np.ndarray
    out_shape: tuple[int, int, int]
    out_affine: np.ndarray

    @property
    def is_exact(self) -> bool:
        """True when the model grid is a pure reorientation + crop of the input grid (no interpolation)."""
        return bool(
            np.allclose(self.scale, 1.0, atol=1e-9) and np.allclose(self.offset, np.round(self.offset), atol=1e-6)
        )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the model grid."""
        return tuple(float(z) for z in np.sqrt((self.out_affine[:3, :3] ** 2).sum(axis=0)))

    def to_model_grid(self, arr: np.ndarray, order: int = 1) -> np.ndarray:
        """Map a 3-D array on the input grid onto the model grid (e.g. a user-supplied mask with ``order=0``)."""
        arr = np.asarray(arr)
        if arr.shape != self.in_shape:
            raise ValueError(f"array shape {arr.shape} differs from the input grid {self.in_shape}")
        las = nio.apply_orientation(arr, self.ornt)
        if self.is_exact:
            lo = np.round(self.offset).astype(int)
            return np.ascontiguousarray(las[tuple(slice(s, s + n) for s, n in zip(lo, self.out_shape, strict=True))])
        return _affine_resample(las, self.scale, self.offset, self.out_shape, order)

    def from_model_grid(self, arr: np.ndarray, order: int = 1) -> np.ndarray:
        """Map a 3-D array on the model grid back onto the input grid (0 outside the model grid's field of view)."""
        arr = np.asarray(arr)
        if arr.shape != self.out_shape:
            raise ValueError(f"array shape {arr.shape} differs from the model grid {self.out_shape}")
        if self.is_exact:
            las = np.zeros(self.las_shape, dtype=arr.dtype)
            lo = np.round(self.offset).astype(int)
            las[tuple(slice(s, s + n) for s, n in zip(lo, self.out_shape, strict=True))] = arr
        else:
            las = _affine_resample(arr, 1.0 / self.scale, -self.offset / self.scale, self.las_shape, order)
        back = nio.ornt_transform(nio.axcodes2ornt(NETWORK_AXCODES), nio.io_orientation(self.in_affine))
        return np.ascontiguousarray(nio.apply_orientation(las, back))


@dataclass(frozen=True)
class ConformedImage:
    """A conformed image (LAS, model grid, float32) and the transform back to the input grid."""

    img: nib.Nifti1Image
    transform: GridTransform
    input_header: nib.Nifti1Header

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the conformed grid."""
        return self.transform.spacing


def _affine_resample(arr: np.ndarray, scale, offset, out_shape, order: int) -> np.ndarray:
    """Resample ``arr`` at ``x = scale * j + offset`` for every output index j (diagonal affine).

    Points within half a voxel of the source grid take the nearest edge value (so float round-off at the exact border
    never zeroes a voxel); points farther out - outside the source voxels' footprint - are 0.
    """
    scale, offset = np.asarray(scale, dtype=float), np.asarray(offset, dtype=float)
    out_dtype = arr.dtype if order == 0 else np.result_type(arr.dtype, np.float32)
    src = arr if order == 0 else arr.astype(out_dtype, copy=False)
    with warnings.catch_warnings():  # a 1-D matrix means "diagonal" (SciPy >= 0.18); the notice is noise here
        warnings.simplefilter("ignore", UserWarning)
        res = ndi.affine_transform(
            src,
            scale,
            offset=offset,
            output_shape=tuple(int(s) for s in out_shape),
            order=order,
            mode="nearest",
            prefilter=False,
        )
    for ax, n in enumerate(out_shape):
        coord = scale[ax] * np.arange(int(n)) + offset[ax]
        outside = (coord < -0.5) | (coord > arr.shape[ax] - 0.5)
        if outside.any():
            sl = [slice(None)] * 3
            sl[ax] = outside
            res[tuple(sl)] = 0
    return res.astype(out_dtype, copy=False)


def clean_zooms(zooms, tol: float = 1e-4) -> np.ndarray:
    """Round header noise away: a zoom within ``tol`` of its 2-decimal rounding (1.0000001) becomes that value.

    >>> clean_zooms([1.0000001, 0.8017, 0.99996]).tolist()
    [1.0, 0.8017, 1.0]
    """
    z = np.asarray(zooms, dtype=float)
    r = np.round(z, 2)
    return np.where(np.abs(z - r) < tol, r, z)


def choose_spacing(zooms, spacing: float | None, tolerance: float = 0.01) -> float | None:
    """Target isotropic spacing for the model, or ``None`` to keep the native grid.

    The model's spacing is used whatever the input resolution (a 0.45 mm scan is resampled down, a 1x1x5 mm stack is
    resampled to the model grid); an input already within ``tolerance`` (relative) of it on every axis keeps its grid,
    which avoids an interpolation for 0.8017/0.8/0.802 mm atlas grids or 1.0000001 mm headers.

    >>> choose_spacing([1.0, 1.0, 1.0], 1.0) is None, choose_spacing([0.45, 0.45, 1.0], 1.0)
    (True, 1.0)
    """
    if spacing is None:
        return None
    if spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    z = clean_zooms(zooms)
    if np.all(np.abs(z - spacing) <= tolerance * spacing):
        return None
    return float(spacing)


def head_bbox(arr: np.ndarray, zooms, margin_mm: float = 10.0, max_si_mm: float = 220.0) -> tuple[slice, ...]:
    """Bounding box (index slices) of the head in a LAS array, with ``margin_mm`` around it.

    Foreground = Otsu threshold (halved, to keep dark skull and CSF) of a Gaussian-smoothed (≈2 mm) copy, closed,
    largest connected component. Along S-I (axis 2 of a LAS array) at most ``max_si_mm`` below the top of the head is
    kept, which drops neck and shoulders of large fields of view while staying far below any brain (an adult brain
    spans ≈130 mm from the vertex). Falls back to the whole array when no foreground is found.
    """
    zooms = np.asarray(zooms, dtype=float)
    step = np.maximum(1, np.floor(2.0 / zooms)).astype(int)  # work at ≈2 mm for speed
    small = np.asarray(arr, dtype=np.float32)[:: step[0], :: step[1], :: step[2]]
    szooms = zooms * step
    smooth = ndi.gaussian_filter(small, sigma=np.maximum(0.5, 2.0 / szooms))
    thr = 0.5 * otsu_threshold(smooth)
    fg = ndi.binary_closing(smooth > thr, iterations=2)
    lab, n = ndi.label(fg)
    full = tuple(slice(0, s) for s in arr.shape)
    if n == 0:
        return full
    fg = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    bbox = []
    for ax in range(3):
        idx = np.flatnonzero(fg.any(axis=tuple(o for o in range(3) if o != ax)))
        lo_mm, hi_mm = idx[0] * szooms[ax], (idx[-1] + 1) * szooms[ax]
        if ax == 2 and hi_mm - lo_mm > max_si_mm:
            lo_mm = hi_mm - max_si_mm
        lo = int(np.floor((lo_mm - margin_mm) / zooms[ax]))
        hi = int(np.ceil((hi_mm + margin_mm) / zooms[ax]))
        bbox.append(slice(max(lo, 0), min(hi, arr.shape[ax])))
    return tuple(bbox)


def otsu_threshold(arr: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold of the values of ``arr`` (histogram-based, no scikit-image needed)."""
    vals = np.asarray(arr, dtype=np.float64).ravel()
    hist, edges = np.histogram(vals, bins=nbins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _squeeze3d(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {data.shape}")
    return data


def _crop_range(bbox: tuple[slice, ...], scale: np.ndarray, offset: np.ndarray, out_shape) -> tuple[np.ndarray, ...]:
    """Model-grid index range [lo, hi) covering the reoriented-input index box ``bbox``."""
    x_lo = np.array([s.start for s in bbox], dtype=float)
    x_hi = np.array([s.stop - 1 for s in bbox], dtype=float)
    lo = np.floor((x_lo - offset) / scale + 1e-6).astype(int)
    hi = np.ceil((x_hi - offset) / scale - 1e-6).astype(int) + 1
    return np.clip(lo, 0, out_shape), np.clip(hi, lo + 1, out_shape)


def conform(
    img: nib.spatialimages.SpatialImage,
    spacing: float | None,
    crop_to_head: bool = True,
    margin_mm: float = 10.0,
    order: int = 1,
    spacing_tolerance: float = 0.01,
    antialias: bool = True,
    anchor: str = "centre",
) -> ConformedImage:
    """Reorient ``img`` to LAS, resample it to ``spacing`` (mm, isotropic) and crop it to the head.

    Parameters
    ----------
    img
        3-D image (4-D with one volume accepted).
    spacing
        The model's spacing; ``None`` keeps the native grid (reorientation and cropping only, exactly invertible).
        See :func:`choose_spacing` for when the native grid is kept anyway.
    crop_to_head
        Crop to the head bounding box (:func:`head_bbox`) plus ``margin_mm``.
    order
        Interpolation order when resampling: 1 for intensities, 0 for label images.
    antialias
        Gaussian pre-filter (sigma = (factor - 1) / 2 input voxels) along axes that are down-sampled.
    anchor
        Resampled grid placement: ``"centre"`` (same field-of-view centre) or ``"origin"`` (same first voxel centre,
        size ``round(n * zoom / spacing)``: the published scripts' SimpleITK resampling).

    Returns
    -------
    ConformedImage
        ``img`` (float32 for ``order > 0``, LAS, model grid) and the :class:`GridTransform` back to ``img``'s grid.
    """
    if anchor not in ("centre", "origin"):
        raise ValueError(f"anchor must be 'centre' or 'origin', got {anchor!r}")
    data = _squeeze3d(img)
    in_affine = np.asarray(img.affine, dtype=float)
    ornt = nio.ornt_transform(nio.io_orientation(in_affine), nio.axcodes2ornt(NETWORK_AXCODES))
    las = nio.apply_orientation(data, ornt)
    las_affine = in_affine @ nio.inv_ornt_aff(ornt, data.shape)
    zooms = np.sqrt((las_affine[:3, :3] ** 2).sum(axis=0))
    target = choose_spacing(zooms, spacing, spacing_tolerance)
    las_shape = np.array(las.shape)
    if target is None:
        out_zooms, scale, offset, grid_shape = clean_zooms(zooms), np.ones(3), np.zeros(3), las_shape
    else:
        out_zooms = np.full(3, target)
        scale = target / zooms
        grid_shape = np.maximum(1, np.round(las_shape * zooms / target)).astype(int)
        if anchor == "origin":
            offset = np.zeros(3)
        else:
            offset = (las_shape - 1) / 2.0 - scale * (grid_shape - 1) / 2.0  # same field-of-view centre
    if crop_to_head:
        lo, hi = _crop_range(head_bbox(las, zooms, margin_mm), scale, offset, grid_shape)
        offset = offset + scale * lo
        grid_shape = hi - lo
    transform = _make_transform(
        data.shape, in_affine, ornt, las_shape, las_affine, scale, offset, grid_shape, out_zooms
    )
    if transform.is_exact:
        out = transform.to_model_grid(data)
    else:
        if antialias and order > 0 and np.any(scale > 1.25):
            sigma = np.where(scale > 1.25, (scale - 1.0) / 2.0, 0.0)
            las = ndi.gaussian_filter(las.astype(np.float32), sigma=sigma)
        out = _affine_resample(las, scale, offset, transform.out_shape, order)
    if order > 0:
        out = out.astype(np.float32, copy=False)
    hdr = img.header.copy() if isinstance(img, nib.Nifti1Image | nib.Nifti2Image) else nib.Nifti1Header()
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        hdr.set_data_shape(data.shape)
        hdr.set_zooms(tuple(float(z) for z in img.header.get_zooms()[:3]))
    hdr.set_xyzt_units("mm")
    out_img = nib.Nifti1Image(out, transform.out_affine)
    out_img.header.set_xyzt_units("mm")
    LOGGER.info(
        "conform: %s %s -> LAS %s at %s mm%s",
        "".join(nio.aff2axcodes(in_affine)),
        data.shape,
        transform.out_shape,
        "x".join(f"{z:.4g}" for z in transform.spacing),
        " (exact, no interpolation)" if transform.is_exact else "",
    )
    return ConformedImage(img=out_img, transform=transform, input_header=hdr)


def _make_transform(in_shape, in_affine, ornt, las_shape, las_affine, scale, offset, out_shape, out_zooms):
    """Build the :class:`GridTransform`; the model-grid affine has exactly ``out_zooms`` and the same FOV centre."""
    vox2las = np.eye(4)
    vox2las[:3, :3] = np.diag(scale)
    vox2las[:3, 3] = offset
    aff = las_affine @ vox2las
    directions = aff[:3, :3] / np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    centre_vox = (np.asarray(out_shape) - 1) / 2.0
    centre = aff[:3, :3] @ centre_vox + aff[:3, 3]
    out_affine = np.eye(4)
    out_affine[:3, :3] = directions * np.asarray(out_zooms)[None, :]
    out_affine[:3, 3] = centre - out_affine[:3, :3] @ centre_vox
    return GridTransform(
        in_shape=tuple(int(s) for s in in_shape),
        in_affine=in_affine,
        ornt=ornt,
        las_shape=tuple(int(s) for s in las_shape),
        scale=np.asarray(scale, dtype=float),
        offset=np.asarray(offset, dtype=float),
        out_shape=tuple(int(s) for s in out_shape),
        out_affine=out_affine,
    )


def unconform(
    array_or_img: np.ndarray | nib.spatialimages.SpatialImage,
    conformed: ConformedImage | GridTransform,
    order: int = 1,
) -> nib.Nifti1Image:
    """Map an array on the model grid back to the original input grid (physical-space resampling).

    Parameters
    ----------
    array_or_img
        3-D array (or image) on the conformed grid, or 4-D with channels along the last axis (each resampled).
    conformed
        The result of :func:`conform` (or its ``transform``).
    order
        0 for labels, 1 for probabilities/intensities. Ignored when the conform was exact (pure index mapping).

    Returns
    -------
    nibabel.Nifti1Image
        On the input grid (input affine and, for NIfTI inputs, its header), dtype of the array (float32 for
        ``order > 0`` resampling of integer data).
    """
    if isinstance(conformed, ConformedImage):
        transform, header = conformed.transform, conformed.input_header
    else:
        transform, header = conformed, None
    arr = np.asanyarray(array_or_img.dataobj) if hasattr(array_or_img, "dataobj") else np.asarray(array_or_img)
    if arr.ndim == 4:
        out = np.stack([transform.from_model_grid(arr[..., c], order) for c in range(arr.shape[3])], axis=-1)
    else:
        out = transform.from_model_grid(arr, order)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(out, transform.in_affine, hdr)
    img.header.set_data_dtype(out.dtype)
    if out.ndim == 3:
        img.header.set_data_shape(out.shape)
    img.header["scl_slope"], img.header["scl_inter"] = np.nan, np.nan
    return img
