"""Report figures (matplotlib, Agg): overlays of a mask / label map on a few slices per axis, group plots.

Pure functions of arrays and nibabel images that write a PNG and return its path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
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
    (index → colour; a label map of FreeSurfer ids must be converted to indices first).
    """
    plt = _plt()
    a = _canonical(anat).astype(np.float32)
    o = _canonical(overlay)
    zooms = nib.as_closest_canonical(anat).header.get_zooms()[:3]
    vmax = float(np.percentile(a[a > 0], 99)) if np.any(a > 0) else 1.0
    pos = slice_positions(o > 0, n_slices)
    fig, axes = plt.subplots(3, n_slices, figsize=(2.2 * n_slices, 6.6), facecolor="black")
    for axis in range(3):
        for j, k in enumerate(pos[axis]):
            ax = axes[axis, j]
            img = np.rot90(np.take(a, k, axis=axis))
            lab = np.rot90(np.take(o, k, axis=axis))
            i, j = (d for d in range(3) if d != axis)
            aspect = zooms[j] / zooms[i]  # rows of the rotated slice run along axis j: true proportions
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest", aspect=aspect)
            if mode == "contour":
                if np.any(lab > 0) and np.any(lab == 0):
                    ax.contour(lab > 0, levels=[0.5], colors="#ff3030", linewidths=0.8)
            else:
                cmap = _lut(list(colors or ["#000000", "#ff0000"]))
                ax.imshow(
                    np.ma.masked_equal(lab, 0),
                    cmap=cmap,
                    vmin=0,
                    vmax=cmap.N - 1,
                    alpha=0.55,
                    interpolation="nearest",
                    aspect=aspect,
                )
            ax.set_axis_off()
            ax.set_title(f"{'xyz'[axis]}={k}", color="white", fontsize=7)
    fig.suptitle(title, color="white", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90, facecolor="black")
    plt.close(fig)
    return out_png


def plot_distributions(
    table, columns: Sequence[str], outliers, out_png: str | os.PathLike, title: str, labels: Sequence[str]
) -> Path:
    """One strip of points per column (values relative to the column median), outliers in red with their label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * len(columns)), 4.0))
    for i, col in enumerate(columns):
        vals = np.asarray(table[col], dtype=float)
        med = np.nanmedian(vals) if np.any(np.isfinite(vals)) else 1.0
        rel = vals / med if med else vals
        bad = np.asarray(outliers[col], dtype=bool)
        jitter = np.linspace(-0.2, 0.2, len(rel)) if len(rel) > 1 else np.zeros(1)
        ax.scatter(i + jitter[~bad], rel[~bad], s=8, c="#4060a0")
        ax.scatter(i + jitter[bad], rel[bad], s=18, c="#e02020", marker="x")
        for x, y, name in zip(i + jitter[bad], rel[bad], np.asarray(labels)[bad], strict=True):
            ax.annotate(name, (x, y), fontsize=5, color="#e02020")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=90, fontsize=5)
    ax.set_ylabel("volume / median")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
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
    ax.set_xlabel("age (years)")
    ax.set_ylabel("volume (L)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
