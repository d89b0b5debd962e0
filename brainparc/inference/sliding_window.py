"""Model-agnostic sliding-window inference with blended, ROI-restricted accumulation.

The networks of this project (BrainParc cascade, AutoStrip) read a ``P³`` input window but predict only its centred
``V³`` *valid* region (``P = 160``; ``V = 96`` BrainParc, ``128`` AutoStrip; spec §1.2). This module places windows so
that their valid regions tile a region of interest (ROI, typically the brain bounding box), reads the input window
around each valid region (constant-padded outside the image), blends overlapping predictions with weights defined over
the valid region, and normalises by the weight sum.

Differences from the official recipe (spec §3.4, §7 items 20, 24, 25), all deliberate:

* weights live on the valid ``V³`` region and are strictly positive there (the official Hann over the padded ``P³``
  output leaves neighbouring valid regions overlapping by only 16 voxels, with weights 0.35 to 1 per axis);
* windows are spread evenly over the ROI (nnU-Net's rule) instead of "every stride plus a final one", which creates
  near-duplicate windows; axes shorter than a window are centred and padded instead of failing;
* accumulators are compact (ROI only, float16 or float32 plus one float32 weight-sum volume) instead of float64 over
  the padded volume, and many-channel outputs can be reduced to argmax labels without a full-size float copy.

``tiling="official"`` together with ``blend="official"`` reproduces the official window geometry and weighting
(whole image, starts of §9 item 4, Hann of the padded window) for regression runs against the shipped outputs and
for the ``reference`` recipe, whose ``resample`` maps the blended sums trilinearly onto the input grid before the
argmax (spec §3.4 step 7), a few planes at a time so that no full-size many-channel copy is made.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

__all__ = [
    "FIXED_POINT",
    "FIXED_POINT_SCALE",
    "Reduced",
    "Resample",
    "blend_weights",
    "normalise_roi",
    "official_window_starts",
    "plan_windows",
    "sliding_window",
    "window_starts",
]

LOGGER = logging.getLogger(__name__)

Roi = tuple[slice, slice, slice]
Predict = Callable[[torch.Tensor], "torch.Tensor | Sequence[torch.Tensor]"]

_REDUCE_MODES = (None, "none", "argmax", "argmax+maxprob")
_CHUNK = 16  # channels per float32 staging buffer when accumulating in float16
#: Accumulator dtype for fixed-point *probabilities*: each window adds ``round(p · w / W · FIXED_POINT_SCALE)``, W the
#: voxel's final weight sum (known from the window plan before any window runs), so the stored value is the blended
#: probability in units of 1/FIXED_POINT_SCALE. Integer additions are exact and order-free; the error is the rounding
#: of each contribution, ≤ n / (2 · FIXED_POINT_SCALE) for n windows (≤ 1.2e-4 for n = 8), as small for a voxel seen by
#: one low-weight window as for any other (float16 sums: up to ~2e-3). The scale leaves headroom for that rounding.
FIXED_POINT = torch.int16
FIXED_POINT_SCALE = 32_000


class Reduced(NamedTuple):
    """An output reduced over channels.

    Attributes
    ----------
    labels : torch.Tensor
        ``[X, Y, Z]`` argmax of the blended probabilities (``uint8`` for ≤ 256 channels, else ``int16``); 0 outside
        the ROI.
    max_prob : torch.Tensor or None
        ``[X, Y, Z]`` float32 blended probability of the winning channel (1 outside the ROI), when requested.
    """

    labels: torch.Tensor
    max_prob: torch.Tensor | None = None


class Resample(NamedTuple):
    """Trilinear resampling of the blended sums onto another grid, per axis: index i ↦ ``(i - offset) / scale``.

    Coordinates outside ``[0, n - 1]`` take the edge value (``align_corners=False`` clamping, as ``F.interpolate``).
    """

    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    shape: tuple[int, int, int]


def window_starts(size: int, window: int, stride: int, *, mode: str = "even") -> list[int]:
    """Start offsets of windows of length ``window`` that cover ``[0, size)``.

    Parameters
    ----------
    size, window, stride : int
        Axis length, window length and the largest allowed step between consecutive starts.
    mode : {"even", "official"}
        ``"even"`` (default, nnU-Net's rule): the fewest windows with step ≤ ``stride``, spread evenly from 0 to
        ``size - window``. ``"official"``: every ``stride`` while ``start < size - window``, plus a final start at
        ``size - window`` (spec §3.2 step 3), which can create near-duplicate windows.

    Returns
    -------
    list of int
        Sorted starts. An axis no longer than the window gets ``[0]``; the caller pads it.

    Examples
    --------
    >>> window_starts(150, 96, 48)
    [0, 27, 54]
    >>> window_starts(272, 160, 80, mode="official")
    [0, 80, 112]
    >>> window_starts(50, 96, 48)
    [0]
    """
    if min(size, window, stride) <= 0:
        raise ValueError(f"size, window and stride must be positive, got {size}, {window}, {stride}")
    if mode not in ("even", "official"):
        raise ValueError(f"mode must be 'even' or 'official', got {mode!r}")
    if size <= window:
        return [0]
    if mode == "official":
        return [*range(0, size - window, stride), size - window]
    n = math.ceil((size - window) / stride) + 1
    return [round(i * (size - window) / (n - 1)) for i in range(n)]


def official_window_starts(
    shape: Sequence[int], patch_size: int = 160, valid_size: int = 96, overlap: float = 0.5
) -> list[list[int]]:
    """Window starts of the official recipe in its *padded* coordinates (spec §3.4 step 5, §9 item 4).

    The official script pads the image by ``(patch_size - valid_size) / 2`` voxels per side and tiles the padded
    volume with stride ``int(patch_size * (1 - overlap))``. In unpadded coordinates these starts are also the starts
    of the valid regions.

    Examples
    --------
    >>> official_window_starts((208, 256, 256))
    [[0, 80, 112], [0, 80, 160], [0, 80, 160]]
    """
    stride = int(patch_size * (1 - overlap))
    pad = patch_size - valid_size
    return [window_starts(s + pad, patch_size, stride, mode="official") for s in shape]


def blend_weights(
    valid_size: int, mode: str = "hann", *, floor: float = 1e-3, patch_size: int | None = None
) -> torch.Tensor:
    """Blending weights over the valid ``V³`` output region, float32, maximum 1 and strictly positive.

    Parameters
    ----------
    valid_size : int
        Edge ``V`` of the valid region.
    mode : {"hann", "gaussian", "constant", "official"}
        ``"hann"``: outer product of ``sin²(π (i + ½) / V)`` (a Hann window sampled at voxel centres, so it never
        reaches 0). ``"gaussian"``: nnU-Net's, σ = V / 8 around the centre. ``"constant"``: all ones.
        ``"official"``: the official symmetric Hann of the whole ``patch_size`` window restricted to the valid region
        (0.349 per axis at the valid border for 160/96); needs ``patch_size``.
    floor : float
        Lower clamp applied to the 3-D weight for ``"hann"`` and ``"gaussian"``. Down-weighting the valid border is the
        point (the small branch sees no context there), but corner weights of ~1e-11 would underflow a float16
        accumulator and leave voxels covered only by window corners with garbage; 1e-3 keeps them exact to float16
        rounding (weights are normalised away by the weight sum, so the floor only matters where nothing better
        covers a voxel).

    Returns
    -------
    torch.Tensor
        ``[V, V, V]`` float32.
    """
    i = torch.arange(valid_size, dtype=torch.float64)
    if mode == "hann":
        axis = torch.sin(math.pi * (i + 0.5) / valid_size) ** 2
    elif mode == "gaussian":
        sigma = valid_size / 8
        axis = torch.exp(-((i - (valid_size - 1) / 2) ** 2) / (2 * sigma**2))
    elif mode == "constant":
        axis = torch.ones(valid_size, dtype=torch.float64)
    elif mode == "official":
        if patch_size is None or patch_size < valid_size:
            raise ValueError("blend='official' needs patch_size >= valid_size")
        offset = (patch_size - valid_size) // 2
        hann = torch.hann_window(patch_size, periodic=False, dtype=torch.float64)
        axis = hann[offset : offset + valid_size] / hann.max()
    else:
        raise ValueError(f"unknown blend mode {mode!r}; use 'hann', 'gaussian', 'constant' or 'official'")
    weights = axis[:, None, None] * axis[None, :, None] * axis[None, None, :]
    if mode in ("hann", "gaussian"):
        weights = (weights / weights.max()).clamp_min(floor)
    return weights.to(torch.float32)


def normalise_roi(roi: Sequence[slice | tuple[int, int]] | None, shape: Sequence[int]) -> Roi:
    """Clamp a 3-D ROI (slices or ``(start, stop)`` pairs; ``None`` = whole image) to ``shape``; reject empty ones."""
    if roi is None:
        return tuple(slice(0, s) for s in shape)  # type: ignore[return-value]
    if len(roi) != 3:
        raise ValueError(f"roi must have 3 entries, got {len(roi)}")
    out = []
    for r, size in zip(roi, shape, strict=True):
        start, stop = (r.start, r.stop) if isinstance(r, slice) else r
        if isinstance(r, slice) and r.step not in (None, 1):
            raise ValueError("roi slices must have step 1")
        start, stop = max(0, start or 0), min(size, size if stop is None else stop)
        if stop <= start:
            raise ValueError(f"empty roi {roi} for image shape {tuple(shape)}")
        out.append(slice(start, stop))
    return tuple(out)  # type: ignore[return-value]


def plan_windows(
    shape: Sequence[int],
    *,
    patch_size: int,
    valid_size: int,
    overlap: float = 0.5,
    roi: Sequence[slice | tuple[int, int]] | None = None,
    tiling: str = "even",
) -> list[tuple[int, int, int]]:
    """Start corners (image coordinates) of the valid regions that tile the ROI.

    ``tiling="even"``: stride ``round(valid_size * (1 - overlap))``, starts spread evenly so that valid regions lie
    inside the ROI and cover it; an ROI axis shorter than ``valid_size`` gets one window centred on it.
    ``tiling="official"``: the whole image with the official starts (:func:`official_window_starts`); ``roi`` must be
    ``None``. Input windows extend ``(patch_size - valid_size) // 2`` voxels beyond each valid region.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if valid_size > patch_size:
        raise ValueError(f"valid_size {valid_size} exceeds patch_size {patch_size}")
    if tiling == "official":
        if roi is not None:
            raise ValueError("tiling='official' covers the whole image; pass roi=None")
        per_axis = official_window_starts(shape, patch_size, valid_size, overlap)
    elif tiling == "even":
        stride = max(1, round(valid_size * (1 - overlap)))
        per_axis = []
        for r in normalise_roi(roi, shape):
            length = r.stop - r.start
            if length < valid_size:
                per_axis.append([r.start - (valid_size - length) // 2])
            else:
                per_axis.append([r.start + s for s in window_starts(length, valid_size, stride)])
    else:
        raise ValueError(f"tiling must be 'even' or 'official', got {tiling!r}")
    return [(a, b, c) for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]


def _extract_window(image: torch.Tensor, corner: Sequence[int], patch_size: int, pad: torch.Tensor) -> torch.Tensor:
    """Copy the ``[C, P, P, P]`` window starting at ``corner`` (may lie outside the image), filled with ``pad``."""
    out = pad.expand(image.shape[0], patch_size, patch_size, patch_size).clone()
    src, dst = [], []
    for start, size in zip(corner, image.shape[1:], strict=True):
        lo, hi = max(start, 0), min(start + patch_size, size)
        if hi <= lo:  # window entirely outside the image along this axis: all padding
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


class _Accumulator:
    """Weighted sums of every output over the ROI plus one float32 weight-sum volume.

    The weight sum is computed from the window ``corners`` up front (it depends on the geometry only), which lets a
    :data:`FIXED_POINT` accumulator store normalised contributions. With a ``region`` (boolean, ROI-shaped) the sums
    are stored only for the region's voxels, as ``[C, n]`` (``index`` maps ROI voxels to columns, -1 outside);
    otherwise densely as ``[C, *roi_shape]``. :func:`_raw_sums` reads any accumulator back as float32 weighted sums.
    """

    def __init__(
        self,
        roi: Roi,
        weights: torch.Tensor,
        accum_dtypes: Sequence[torch.dtype],
        device: torch.device,
        corners: Sequence[Sequence[int]],
        region: torch.Tensor | None = None,
    ):
        self.roi = roi
        self.origin = [r.start for r in roi]
        self.roi_shape = tuple(r.stop - r.start for r in roi)
        self.weights = weights.to(device)
        self.dtypes = accum_dtypes
        self.device = device
        self.sums: list[torch.Tensor] = []
        self._buffer: torch.Tensor | None = None
        self.wsum = torch.zeros(self.roi_shape, dtype=torch.float32, device=device)
        for corner in corners:
            acc_sl, win_sl = self._slices(corner)
            self.wsum[acc_sl] += self.weights[win_sl]
        self.region = None if region is None else region.to(device=device, dtype=torch.bool)
        self.index: torch.Tensor | None = None
        if self.region is not None:  # int32: a column index per ROI voxel (half of int64's volume)
            self.index = torch.full(self.roi_shape, -1, dtype=torch.int32, device=device)
            self.index[self.region] = torch.arange(int(self.region.sum()), dtype=torch.int32, device=device)

    def _slices(self, corner: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """The accumulator and window slices of the valid region starting at ``corner``, clipped to the ROI."""
        v = self.weights.shape[0]
        acc_sl, win_sl = [], []
        for start, origin, size in zip(corner, self.origin, self.roi_shape, strict=True):
            lo, hi = max(start, origin), min(start + v, origin + size)
            acc_sl.append(slice(lo - origin, hi - origin))
            win_sl.append(slice(lo - start, hi - start))
        return tuple(acc_sl), tuple(win_sl)

    def _allocate(self, outputs: Sequence[torch.Tensor]) -> None:
        if len(self.dtypes) not in (1, len(outputs)):
            raise ValueError(f"{len(self.dtypes)} accumulator dtypes for {len(outputs)} outputs")
        dtypes = self.dtypes if len(self.dtypes) == len(outputs) else list(self.dtypes) * len(outputs)
        extent = self.roi_shape if self.index is None else (int(self.region.sum()),)
        for out, dtype in zip(outputs, dtypes, strict=True):
            self.sums.append(torch.zeros((out.shape[1], *extent), dtype=dtype, device=self.device))

    def add(self, corner: Sequence[int], outputs: Sequence[torch.Tensor], index: int) -> None:
        """Add window ``index`` of a batch of outputs whose valid region starts at ``corner``."""
        if not self.sums:
            self._allocate(outputs)
        acc_sl, win_sl = self._slices(corner)
        w = self.weights[win_sl]
        w_fixed = None  # this window's share of the final weight, in fixed-point units (only fixed-point sums use it)
        if any(acc.dtype == FIXED_POINT for acc in self.sums):
            w_fixed = w / self.wsum[acc_sl] * FIXED_POINT_SCALE
        if self.index is not None:
            probs = [out[(index, slice(None), *win_sl)] for out in outputs]
            self._add_sparse(self.index[acc_sl], probs, w, w_fixed)
            return
        for acc, out in zip(self.sums, outputs, strict=True):
            prob = out[(index, slice(None), *win_sl)].to(self.device)
            target = acc[(slice(None), *acc_sl)]
            if acc.dtype == torch.float32:
                target.addcmul_(prob, w)
            elif acc.dtype == FIXED_POINT:
                target += (prob * w_fixed).round_().to(FIXED_POINT)
            else:
                self._add_low_precision(target, prob, w)

    def _add_low_precision(self, target: torch.Tensor, prob: torch.Tensor, w: torch.Tensor) -> None:
        """``target += prob * w`` computed in float32 and rounded once into a float16/bfloat16 accumulator.

        Mixed-dtype in-place ops are ~10x slower than float32 ones on CPU; going through a float32 buffer of
        ``_CHUNK`` channels is ~2.5x faster than ``addcmul_`` on the float16 view and keeps the temporary small.
        """
        if self._buffer is None:
            v = self.weights.shape[0]
            self._buffer = torch.empty((_CHUNK, v, v, v), dtype=torch.float32, device=self.device)
        for c0 in range(0, target.shape[0], _CHUNK):
            part = target[c0 : c0 + _CHUNK]
            buf = self._buffer[(slice(0, part.shape[0]), *(slice(0, n) for n in part.shape[1:]))]
            buf.copy_(part)
            buf.addcmul_(prob[c0 : c0 + _CHUNK], w)
            part.copy_(buf)

    def _add_sparse(
        self, index: torch.Tensor, probs: Sequence[torch.Tensor], w: torch.Tensor, w_fixed: torch.Tensor | None
    ) -> None:
        """Add the window's values at the region voxels it covers, ``_CHUNK`` channels at a time (float32, or int32
        for fixed point)."""
        flat = index.reshape(-1)
        positions = (flat >= 0).nonzero().squeeze(1)
        if positions.numel() == 0:
            return
        columns = flat.index_select(0, positions).long()
        for acc, prob in zip(self.sums, probs, strict=True):
            fixed = acc.dtype == FIXED_POINT
            w_in = (w_fixed if fixed else w).reshape(-1).index_select(0, positions)
            prob = prob.to(self.device)
            for c0 in range(0, acc.shape[0], _CHUNK):
                part, rows = prob[c0 : c0 + _CHUNK], acc[c0 : c0 + _CHUNK]
                values = part.reshape(part.shape[0], -1).index_select(1, positions).float()
                values.mul_(w_in)
                if fixed:
                    values = values.round_().to(torch.int32)
                # a window covers each region voxel once, so gather-add-scatter has no duplicate columns
                values += rows.index_select(1, columns).to(values.dtype)
                rows.index_copy_(1, columns, values.to(acc.dtype))


def _raw_sums(acc: torch.Tensor, wsum: torch.Tensor) -> torch.Tensor:
    """float32 weighted sums from accumulator values (fixed-point probabilities are scaled back by the weight sum,
    which broadcasts against the trailing dimensions)."""
    if acc.dtype == FIXED_POINT:
        return acc.float() * (wsum / FIXED_POINT_SCALE)
    return acc.float()


def _check_outputs(outputs: torch.Tensor | Sequence[torch.Tensor], batch: int, valid_size: int) -> list[torch.Tensor]:
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    for k, out in enumerate(outputs):
        if out.ndim != 5 or out.shape[0] != batch or tuple(out.shape[2:]) != (valid_size,) * 3:
            raise ValueError(
                f"predict output {k} has shape {tuple(out.shape)}; expected [{batch}, C, {valid_size}, "
                f"{valid_size}, {valid_size}]"
            )
    return outputs


def _finalise(
    acc: torch.Tensor,
    wsum: torch.Tensor,
    roi: Roi,
    shape: Sequence[int],
    reduce: str | None,
    region: torch.Tensor | None = None,
) -> torch.Tensor | Reduced:
    """Normalise one accumulator (or reduce it to argmax) and paste it into a full-size, background-filled output."""
    if region is not None:
        wsum = wsum[region]

    def paste(values: torch.Tensor, fill: float) -> torch.Tensor:
        """ROI-shaped values from dense values or from region columns (``fill`` outside the region)."""
        if region is None:
            return values.cpu()
        out = torch.full(region.shape, fill, dtype=values.dtype, device=values.device)
        out[region] = values
        return out.cpu()

    covered = wsum > 0
    if reduce in (None, "none"):
        probs = torch.zeros((acc.shape[0], *shape), dtype=torch.float32)
        probs[0] = 1.0
        # per-channel division keeps the float32 temporaries to one ROI-sized volume at a time
        for c in range(acc.shape[0]):
            value = torch.where(covered, _raw_sums(acc[c], wsum) / wsum.clamp_min(1e-30), float(c == 0))
            probs[(c, *roi)] = paste(value, float(c == 0))
        return probs
    label_dtype = torch.uint8 if acc.shape[0] <= 256 else torch.int16
    labels = torch.zeros(tuple(shape), dtype=label_dtype)
    # argmax of the weighted sums equals argmax of the normalised probabilities (one positive factor per voxel)
    best, idx = acc.max(dim=0)
    labels[roi] = paste(torch.where(covered, idx, 0).to(label_dtype), 0)
    max_prob = None
    if reduce == "argmax+maxprob":
        max_prob = torch.ones(tuple(shape), dtype=torch.float32)
        max_prob[roi] = paste(torch.where(covered, _raw_sums(best, wsum) / wsum.clamp_min(1e-30), 1.0), 1.0)
    return Reduced(labels, max_prob)


def _axis_taps(n_out: int, scale: float, offset: float, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear interpolation taps along one axis: lower and upper source index and the upper weight."""
    j = ((torch.arange(n_out, dtype=torch.float64) - offset) / scale).clamp(0, n_in - 1)
    j0 = j.floor().long()
    return j0, (j0 + 1).clamp_max(n_in - 1), (j - j0).to(torch.float32)


def _lerp(t: torch.Tensor, dim: int, taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Linear interpolation of ``t`` along ``dim`` at the given taps."""
    j0, j1, f = taps
    shape = [1] * t.ndim
    shape[dim] = -1
    f = f.reshape(shape)
    return t.index_select(dim, j0) * (1 - f) + t.index_select(dim, j1) * f


def _dense_planes(
    acc: torch.Tensor, wsum: torch.Tensor, index: torch.Tensor | None, lo: int, hi: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and weight sum of planes ``[lo, hi)`` along the first axis, dense float32; outside a region the sums are
    background (the weight sum in channel 0)."""
    w = wsum[lo:hi]
    if index is None:
        return _raw_sums(acc[:, lo:hi], w), w
    idx = index[lo:hi]
    inside = idx >= 0
    dense = torch.zeros((acc.shape[0], *idx.shape), dtype=torch.float32, device=acc.device)
    dense[:, inside] = _raw_sums(acc[:, idx[inside].long()], w[inside])
    dense[0][~inside] = w[~inside]
    return dense, w


def _finalise_resampled(
    acc: torch.Tensor,
    wsum: torch.Tensor,
    index: torch.Tensor | None,
    reduce: str | None,
    resample: Resample,
    planes: int = 4,
) -> torch.Tensor | Reduced:
    """Resample the un-normalised sums and the weight sum trilinearly onto ``resample.shape``, ``planes`` output planes
    at a time, then normalise (probabilities) or take the argmax (labels; the same as the argmax of the resampled
    raw sums, which is what the reference computes)."""
    taps = [_axis_taps(n, sc, off, n_in) for sc, off, n, n_in in zip(*resample, wsum.shape, strict=True)]
    shape = tuple(resample.shape)
    if reduce in (None, "none"):
        out: torch.Tensor = torch.zeros((acc.shape[0], *shape), dtype=torch.float32)
    else:
        out = torch.zeros(shape, dtype=torch.uint8 if acc.shape[0] <= 256 else torch.int16)
        max_prob = torch.ones(shape, dtype=torch.float32) if reduce == "argmax+maxprob" else None
    for i0 in range(0, shape[0], planes):
        j0, j1, f = (t[i0 : i0 + planes] for t in taps[0])
        lo, hi = int(j0.min()), int(j1.max()) + 1
        sums, w = _dense_planes(acc, wsum, index, lo, hi)
        sums, w = _lerp(sums, 1, (j0 - lo, j1 - lo, f)), _lerp(w[None], 1, (j0 - lo, j1 - lo, f))
        for dim in (2, 3):
            sums, w = _lerp(sums, dim, taps[dim - 1]), _lerp(w, dim, taps[dim - 1])
        covered = w[0] > 0
        if reduce in (None, "none"):
            probs = torch.where(covered, sums / w.clamp_min(1e-30), 0.0)
            probs[0] = torch.where(covered, probs[0], 1.0)
            out[:, i0 : i0 + planes] = probs.cpu()
            continue
        best, labels = sums.max(dim=0)
        out[i0 : i0 + planes] = torch.where(covered, labels, 0).to(out.dtype).cpu()
        if max_prob is not None:
            max_prob[i0 : i0 + planes] = torch.where(covered, best / w[0].clamp_min(1e-30), 1.0).cpu()
    return out if reduce in (None, "none") else Reduced(out, max_prob)


def windows_in_region(
    corners: Sequence[tuple[int, int, int]], region: torch.Tensor, valid_size: int
) -> list[tuple[int, int, int]]:
    """The windows whose valid region holds at least one voxel of the boolean image-sized ``region``."""
    shape = region.shape
    kept = []
    for corner in corners:
        box = tuple(slice(max(c, 0), min(c + valid_size, n)) for c, n in zip(corner, shape, strict=True))
        if all(b.stop > b.start for b in box) and bool(region[box].any()):
            kept.append(corner)
    return kept


def _run_windows(
    predict: Predict,
    image: torch.Tensor,
    corners: Sequence[tuple[int, int, int]],
    acc: _Accumulator,
    patch_size: int,
    batch_size: int,
    device: torch.device,
    pad: torch.Tensor,
    progress: bool | str,
) -> None:
    """Feed batches of input windows to ``predict`` and add the outputs to ``acc``."""
    from tqdm.auto import tqdm

    valid_size = acc.weights.shape[0]
    offset = (patch_size - valid_size) // 2
    desc = progress if isinstance(progress, str) else "windows"
    with torch.inference_mode(), tqdm(total=len(corners), disable=not progress, desc=desc, unit="win") as bar:
        for first in range(0, len(corners), batch_size):
            chunk = corners[first : first + batch_size]
            batch = torch.stack([_extract_window(image, [c - offset for c in cor], patch_size, pad) for cor in chunk])
            outputs = _check_outputs(predict(batch.to(device)), len(chunk), valid_size)
            for index, corner in enumerate(chunk):
                acc.add(corner, outputs, index)
            del outputs, batch
            bar.update(len(chunk))


def sliding_window(
    predict: Predict,
    image: torch.Tensor,
    *,
    patch_size: int,
    valid_size: int,
    overlap: float = 0.5,
    roi: Sequence[slice | tuple[int, int]] | None = None,
    batch_size: int = 1,
    accum_dtype: torch.dtype | Sequence[torch.dtype] = torch.float16,
    device: torch.device | str = "cpu",
    out_device: torch.device | str = "cpu",
    progress: bool | str = False,
    reduce: str | Sequence[str | None] | None = None,
    blend: str = "hann",
    tiling: str = "even",
    pad_value: float | Sequence[float] = 0.0,
    region: torch.Tensor | None = None,
    skip_outside_region: bool = False,
    resample: Resample | None = None,
) -> tuple[torch.Tensor | Reduced, ...]:
    """Run ``predict`` over windows tiling the ROI and blend the valid-region outputs.

    Parameters
    ----------
    predict : callable
        Maps a ``[B, C, P, P, P]`` batch (on ``device``) to a tensor or tuple of tensors ``[B, C_k, V, V, V]`` of
        probabilities over the centred ``V³`` valid region. Called under ``torch.inference_mode``.
    image : torch.Tensor
        ``[C, X, Y, Z]`` input (already normalised; stays where it is, windows are copied to ``device``).
    patch_size, valid_size : int
        Input window edge ``P`` and valid output edge ``V`` (the model's ``patch_size``/``valid_size``).
    overlap : float
        Fraction of the valid region shared by neighbouring windows (``"even"`` tiling; ``"official"`` uses it on the
        padded window as the reference does).
    roi : sequence of 3 slices or (start, stop) pairs, optional
        Region to predict (e.g. the brain bounding box plus a margin); ``None`` = whole image. Voxels outside get
        background: channel 0 = 1 for probabilities, label 0 for reduced outputs.
    batch_size : int
        Windows per ``predict`` call.
    accum_dtype : torch.dtype or sequence of torch.dtype
        Dtype of the weighted-sum accumulators (one for all outputs, or one per output). float16 halves memory at a
        relative error ≤ n·2⁻¹¹ of the blended value, n = windows covering the voxel (up to 27 at overlap 0.5 with
        even spacing); measured on probabilities: max ≈ 2e-3 to 4e-3, mean ≈ 6e-5. Harmless for argmax labels.
        :data:`FIXED_POINT` (int16) takes as little memory with an absolute error ≤ n / 64,000 of the probability
        (≤ 1.2e-4 for n = 8). float32 for the exact sums. The weight sum is always float32.
    device, out_device : torch.device or str
        Where ``predict`` runs, and where the accumulators live (CPU by default: they are the big tensors).
    progress : bool or str
        Show a tqdm progress bar over windows (on stderr); a string is the bar's label.
    reduce : None, "argmax", "argmax+maxprob", or one such value per output
        ``None`` returns float32 probabilities ``[C_k, X, Y, Z]`` (fine for 4 channels, 5.8 GB for 107 at 1 mm: use
        argmax there); ``"argmax"`` returns :class:`Reduced` labels, ``"argmax+maxprob"`` also the winning probability.
    blend : str
        Weight mode of :func:`blend_weights`.
    tiling : {"even", "official"}
        Window placement, see :func:`plan_windows`.
    pad_value : float or sequence of float
        Input value outside the image (per channel if a sequence). The official recipe pads with 0 after z-scoring.
    region : torch.Tensor, optional
        Boolean ``[X, Y, Z]`` voxels to keep (e.g. the brain mask dilated by a margin). Sums are stored only for
        region voxels inside the ROI, which cuts accumulator memory to the region's share of the ROI (≈ 45-55 % for
        a brain in its bounding box); ROI voxels outside it get background, as voxels outside the ROI do.
    skip_outside_region : bool
        Skip the windows whose valid region holds no ``region`` voxel (:func:`windows_in_region`): nothing they add
        is kept, except to the weight sum outside the region.
    resample : Resample, optional
        Return the outputs on another grid (needs ``roi=None``): the raw sums and the weight sum are resampled
        trilinearly, then normalised or reduced (:class:`Resample`).

    Returns
    -------
    tuple
        One entry per ``predict`` output: a float32 ``[C_k, X, Y, Z]`` tensor or a :class:`Reduced`, on CPU.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [C, X, Y, Z], got shape {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not all(r in _REDUCE_MODES for r in ([reduce] if reduce is None or isinstance(reduce, str) else reduce)):
        raise ValueError(f"reduce must be one of {_REDUCE_MODES} (or one per output), got {reduce!r}")
    shape = tuple(image.shape[1:])
    roi_n = normalise_roi(roi, shape)
    corners = plan_windows(shape, patch_size=patch_size, valid_size=valid_size, overlap=overlap, roi=roi, tiling=tiling)
    if resample is not None and roi is not None:
        raise ValueError("resample needs the whole image (roi=None)")
    if skip_outside_region and region is not None:
        corners = windows_in_region(corners, torch.as_tensor(region, dtype=torch.bool), valid_size)
    dtypes = [accum_dtype] if isinstance(accum_dtype, torch.dtype) else list(accum_dtype)
    region_roi = None
    if region is not None:
        if tuple(region.shape) != shape:
            raise ValueError(f"region shape {tuple(region.shape)} differs from the image shape {shape}")
        region_roi = torch.as_tensor(region, dtype=torch.bool)[roi_n]
    weights = blend_weights(valid_size, blend, patch_size=patch_size)
    acc = _Accumulator(roi_n, weights, dtypes, torch.device(out_device), corners, region_roi)
    pad = torch.as_tensor(pad_value, dtype=image.dtype).reshape(-1, 1, 1, 1)
    LOGGER.debug("sliding window: %d windows over roi %s of %s", len(corners), roi_n, shape)
    _run_windows(predict, image, corners, acc, patch_size, batch_size, torch.device(device), pad, progress)
    reduces = [reduce] * len(acc.sums) if reduce is None or isinstance(reduce, str) else list(reduce)
    if len(reduces) != len(acc.sums):
        raise ValueError(f"reduce has {len(reduces)} entries for {len(acc.sums)} outputs")
    # Largest accumulator first, each dropped once finalised: the full-size outputs of the small ones are then never
    # held together with the big (107-channel) sum.
    results: dict[int, torch.Tensor | Reduced] = {}
    for k in sorted(range(len(acc.sums)), key=lambda k: -acc.sums[k].numel()):
        if resample is not None:
            results[k] = _finalise_resampled(acc.sums[k], acc.wsum, acc.index, reduces[k], resample)
        else:
            results[k] = _finalise(acc.sums[k], acc.wsum, roi_n, shape, reduces[k], acc.region)
        acc.sums[k] = torch.empty(0)
    return tuple(results[k] for k in range(len(results)))
