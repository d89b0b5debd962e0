"""Report figures (matplotlib, Agg): overlays of a mask / label map on a few slices per axis, group plots.

Pure functions of arrays and nibabel images that write a PNG and return its path; :func:`overlay_slices` (the
geometry of the overlays: orientation, crop, slice positions) is separate so that it can be tested on arrays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

if not os.access(os.path.expanduser("~"), os.W_OK):  # matplotlib wants a writable config dir
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="brainparc-mpl-"))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _canonical(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(img).dataobj)


def slice_positions(mask: np.ndarray, n: int = 3) -> list[list[int]]:
    """``n`` slice indices per axis spread over the extent of ``mask`` (the whole grid if empty).

    >>> m = np.zeros((10, 10, 10), bool); m[2:8, 2:8, 2:8] = True
    >>> slice_positions(m, 3)
    [[3, 4, 6], [3, 4, 6], [3, 4, 6]]
    """
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(np.asarray(mask).any(axis=other))
        lo, hi = (idx[0], idx[-1]) if idx.size else (0, mask.shape[axis] - 1)
        out.append([round(lo + (hi - lo) * f) for f in np.linspace(0.25, 0.75, n)])
    return out


def _lut(colors: Sequence[str]):
    from matplotlib.colors import ListedColormap

    return ListedColormap(["#00000000", *colors[1:]])


#: Panel title and the (left, right) side letters of each canonical (RAS) axis, as drawn by :func:`overlay_slices`:
#: sagittal slices face right (posterior left), coronal and axial slices are in neurological order (patient left on
#: the left of the picture), superior/anterior up.
VIEWS = (("sagittal", "x", ("P", "A")), ("coronal", "y", ("L", "R")), ("axial", "z", ("L", "R")))


@dataclass(frozen=True)
class SlicePanel:
    """One panel of an overlay figure: display-ready 2-D arrays (row 0 at the top) and how to label them."""

    axis: int  # canonical (RAS) axis the slice is taken across
    index: int  # slice index along that axis (canonical grid)
    world_mm: float  # scanner coordinate of the slice along that axis
    anat: np.ndarray
    overlay: np.ndarray
    aspect: float  # pixel height / width, for true proportions


def _bbox(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    if not idx[0].size:
        return tuple(slice(None) for _ in range(mask.ndim))
    return tuple(slice(max(0, int(i.min()) - m), int(i.max()) + m + 1) for i, m in zip(idx, margin, strict=True))


def overlay_slices(
    anat: nib.spatialimages.SpatialImage,
    overlay: nib.spatialimages.SpatialImage,
    n_slices: int = 3,
    margin_mm: float = 12.0,
) -> list[SlicePanel]:
    """``n_slices`` sagittal, coronal and axial panels of ``anat`` and ``overlay`` (same grid), cropped to the head.

    Both images are brought to the closest canonical (RAS) orientation first, so the panels look the same whatever
    the storage order; each panel is cropped to the bounding box of the overlay (of the anatomy where the overlay is
    empty) plus ``margin_mm``, so a brain fills its panel even in a whole-head image with a wide field of view.

    >>> img = nib.Nifti1Image(np.pad(np.ones((4, 6, 8), np.float32), 5), np.eye(4))
    >>> [(p.axis, p.anat.shape) for p in overlay_slices(img, img, n_slices=1, margin_mm=4)]
    [(0, (16, 14)), (1, (16, 12)), (2, (14, 12))]
    """
    canon = nib.as_closest_canonical(anat)
    a = np.asarray(canon.dataobj, dtype=np.float32)
    o = np.asarray(nib.as_closest_canonical(overlay).dataobj)
    zooms = canon.header.get_zooms()[:3]
    margin = np.ceil(margin_mm / np.asarray(zooms, dtype=float)).astype(int)
    box = _bbox(o > 0 if np.any(o > 0) else a > 0, margin)
    pos = slice_positions(o > 0, n_slices)
    centre = np.array([np.mean(range(n)[s]) for s, n in zip(box, a.shape, strict=True)])  # of the crop
    panels = []
    for axis in range(3):
        i, j = (d for d in range(3) if d != axis)
        for k in pos[axis]:
            crop = tuple(k if d == axis else box[d] for d in range(3))
            voxel = centre.copy()
            voxel[axis] = k
            world = float((canon.affine @ np.append(voxel, 1.0))[axis])
            aspect = float(zooms[j] / zooms[i])  # rows of the rotated slice run along axis j, columns along i
            panels.append(SlicePanel(axis, k, world, np.rot90(a[crop]), np.rot90(o[crop]), aspect))
    return panels


def plot_overlay(
    anat: nib.spatialimages.SpatialImage,
    overlay: nib.spatialimages.SpatialImage,
    out_png: str | os.PathLike,
    *,
    mode: str = "labels",
    colors: Sequence[str] | None = None,
    title: str = "",
    n_slices: int = 3,
) -> Path:
    """Overlay ``overlay`` on ``anat`` (same grid) on ``n_slices`` sagittal, coronal and axial slices.

    ``mode='contour'`` draws the outline of a binary mask; ``'labels'`` paints index values with ``colors``
    (index → colour; a label map of FreeSurfer ids must be converted to indices first). Rows: sagittal, coronal,
    axial; each panel is labelled with its plane, scanner coordinate (mm) and side letters (see :data:`VIEWS`).
    """
    plt = _plt()
    panels = overlay_slices(anat, overlay, n_slices)
    a_all = np.concatenate([p.anat.ravel() for p in panels])
    vmax = float(np.percentile(a_all[a_all > 0], 99.5)) if np.any(a_all > 0) else 1.0
    cmap = _lut(list(colors or ["#000000", "#ff0000"]))
    fig, axes = plt.subplots(3, n_slices, figsize=(2.9 * n_slices, 8.4), facecolor="black", squeeze=False)
    for n, panel in enumerate(panels):
        ax = axes[panel.axis, n % n_slices]
        ax.imshow(panel.anat, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest", aspect=panel.aspect)
        if mode == "contour":
            if np.any(panel.overlay > 0) and np.any(panel.overlay == 0):
                ax.contour(panel.overlay > 0, levels=[0.5], colors="#ff3030", linewidths=1.0)
        else:
            ax.imshow(
                np.ma.masked_equal(panel.overlay, 0),
                cmap=cmap,
                vmin=0,
                vmax=cmap.N - 1,
                alpha=0.5,
                interpolation="nearest",
                aspect=panel.aspect,
            )
        view, letter, (left, right) = VIEWS[panel.axis]
        ax.set_axis_off()
        ax.set_title(f"{view} {letter} = {panel.world_mm:.0f} mm", color="white", fontsize=9)
        for x, text, ha in ((0.01, left, "left"), (0.99, right, "right")):
            ax.text(x, 0.5, text, transform=ax.transAxes, color="#ffd040", fontsize=10, ha=ha, va="center")
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95 if title else 0.97, wspace=0.04, hspace=0.12)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, facecolor="black")
    plt.close(fig)
    return out_png


def _pairs(columns: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """``(row label, left column, right column)``: Left/Right homologues share a row, others keep their own.

    >>> _pairs(["Left Insula", "Right Insula", "Brainstem"])
    [('Insula', 'Left Insula', 'Right Insula'), ('Brainstem', None, 'Brainstem')]
    """
    rows, seen = [], set()
    for col in columns:
        if col in seen:
            continue
        side, _, rest = col.partition(" ")
        other = {"Left": "Right " + rest, "Right": "Left " + rest}.get(side)
        if other in columns:
            left, right = (col, other) if side == "Left" else (other, col)
            rows.append((rest, left, right))
            seen.update((left, right))
        else:
            rows.append((col, None, col))
            seen.add(col)
    return rows


def plot_distributions(
    values,
    outliers,
    out_png: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    labels: Sequence[str],
    reference: float | None = 1.0,
) -> Path:
    """One row per structure (Left/Right homologues share a row: L circles, R triangles; others squares), one point
    per scan.

    ``values`` and ``outliers`` are frames (scans × columns); outliers are drawn as red crosses and named with their
    entry of ``labels``. ``reference`` draws a vertical line (e.g. 1 for values relative to the median).
    """
    plt = _plt()
    rows = _pairs(list(values.columns))
    n = len(labels)
    jitter = np.linspace(-0.18, 0.18, n) if n > 1 else np.zeros(1)
    fig, ax = plt.subplots(figsize=(7.5, 1.5 + 0.19 * len(rows)))
    names = np.asarray(labels)
    for r, (_, left, right) in enumerate(rows):
        styles = ((left, "o", "#3060b0", -0.1), (right, "^", "#e08020", 0.1)) if left else ((right, "s", "#404040", 0),)
        for col, marker, colour, shift in styles:
            x = np.asarray(values[col], dtype=float)
            bad = np.asarray(outliers[col], dtype=bool)
            y = r + shift + jitter
            ax.scatter(x[~bad], y[~bad], s=10, c=colour, marker=marker, linewidths=0)
            ax.scatter(x[bad], y[bad], s=28, c="#e02020", marker="x")
            for xv, yv, who in zip(x[bad], y[bad], names[bad], strict=True):
                high = reference is not None and xv > reference  # name on the inner side: never clipped
                text = f"{who}  " if high else f"  {who}"
                ax.annotate(text, (xv, yv), fontsize=6, color="#e02020", va="center", ha="right" if high else "left")
    if reference is not None:
        ax.axvline(reference, color="grey", lw=0.6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _, _ in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="y", color="#eeeeee", lw=0.5)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    paired = any(left is not None for _, left, _ in rows)
    legend = [("o", "#3060b0", "left"), ("^", "#e08020", "right")] if paired else []
    if paired and any(left is None for _, left, _ in rows):
        legend.append(("s", "#404040", "unpaired"))
    legend.append(("x", "#e02020", "outlier (within age band)"))
    handles = [ax.scatter([], [], c=c, marker=m, s=14, label=lab) for m, c, lab in legend]
    height = fig.get_size_inches()[1]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))  # the legend below the axis, never over the points
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_vs_age(ages: Sequence[float], series: dict[str, Sequence[float]], out_png: str | os.PathLike) -> Path:
    """Total volumes (litres) against age (years): the lifespan chart."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, vals in series.items():
        ax.scatter(ages, np.asarray(vals, dtype=float) / 1e6, s=14, label=name)
    ages = np.asarray(ages, dtype=float)
    if ages.size and ages.min() < 2 and ages.max() > 10:  # infants and adults: stretch the first years
        ax.set_xscale("symlog", linthresh=2, linscale=1)
        ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 100) if t <= ages.max() * 1.2]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("age (years)")
    ax.set_ylabel("volume (L)")
    ax.set_title("Total volumes across the lifespan", fontsize=9)
    ax.grid(color="#eeeeee", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
