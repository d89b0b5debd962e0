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


#: Colours of the parcellation figure that differ from FreeSurfer's: its near-white cerebral white matter and
#: dark-grey CSF vanish on a T1w, so a hemisphere labelled white matter (or CSF) throughout looked unlabelled. Here
#: the two white-matter sides get distinct, visible colours, and CSF a clear one.
FIGURE_COLORS = {
    "Left Cerebral White Matter": "#6f9fd8",
    "Right Cerebral White Matter": "#d8a86f",
    "Cerebrospinal Fluid": "#20c0b0",
}
#: Order of the legend's groups (the ``group`` column of the label table).
GROUP_ORDER = (
    "cortex: frontal",
    "cortex: parietal",
    "cortex: temporal",
    "cortex: occipital",
    "cortex: cingulate",
    "cortex: insula",
    "subcortical",
    "other",
)

#: A legend: ``(group title, [(entry, colour), ...])`` per group.
Legend = list[tuple[str, list[tuple[str, str]]]]


def parcellation_colors(table) -> list[str]:
    """Index → colour of the parcellation figure: FreeSurfer's, except :data:`FIGURE_COLORS`.

    >>> from brainparc import labels
    >>> colors = parcellation_colors(labels.dk_struct())
    >>> colors[7], colors[91] != colors[92]
    ('#14dca0', True)
    """
    return [FIGURE_COLORS.get(lab.name, lab.color) for lab in table.labels]


def legend_groups(present: Sequence[int], table, colors: Sequence[str]) -> Legend:
    """The legend of a label map: the labels ``present`` (indices), grouped (cortex per lobe, subcortical, other).

    Left/right homologues drawn in one colour share an entry, marked "(left only)" / "(right only)" when one side is
    missing; homologues in different colours get an entry each.

    >>> from brainparc import labels
    >>> dk = labels.dk_struct()
    >>> legend_groups([7, 8, 10, 91, 99], dk, parcellation_colors(dk))  # doctest: +NORMALIZE_WHITESPACE
    [('cortex: frontal', [('superior frontal', '#14dca0'), ('rostral middle frontal (right only)', '#4b327d')]),
     ('other', [('left cerebral white matter', '#6f9fd8'), ('brainstem', '#779fb0')])]
    """
    wanted = sorted({int(i) for i in present if 0 < int(i) < len(table)})
    entries: dict[str, list[tuple[str, str]]] = {}
    done: set[int] = set()
    by_name = {lab.name: lab.index for lab in table.labels}
    for i in wanted:
        if i in done:
            continue
        lab = table[i]
        other = None
        if lab.side:
            twin = ("Right " if lab.side == "left" else "Left ") + lab.name.split(" ", 1)[1]
            other = by_name.get(twin)
        if other is not None and colors[other] == colors[i]:
            both = other in wanted
            text = lab.display_name if both else f"{lab.display_name} ({lab.side} only)"
            done.add(other)
        else:
            text = lab.display
        entries.setdefault(lab.group or "other", []).append((text, colors[i]))
        done.add(i)
    order = [g for g in GROUP_ORDER if g in entries] + [g for g in entries if g not in GROUP_ORDER]
    return [(group, entries[group]) for group in order]


def _draw_legend(fig, legend: Legend, left: float) -> None:
    """Draw ``legend`` (group titles in bold) in the figure area right of ``left`` (figure fraction)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, texts, bold = [], [], []
    for group, entries in legend:
        bold.append(len(texts))
        handles.append(Line2D([], [], linestyle="none"))
        texts.append(group)
        for text, colour in entries:
            handles.append(Patch(facecolor=colour, edgecolor="#808080"))
            texts.append(text)
    ncol = 1 if len(texts) <= 34 else 2
    ax = fig.add_axes((left, 0.01, 0.99 - left, 0.98))
    ax.set_axis_off()
    leg = ax.legend(
        handles,
        texts,
        loc="upper left",
        ncol=ncol,
        fontsize=8,
        frameon=False,
        labelcolor="white",
        handlelength=1.2,
        handletextpad=0.5,
        columnspacing=1.0,
        borderaxespad=0.0,
        labelspacing=0.35,
    )
    for k in bold:
        leg.get_texts()[k].set_fontweight("bold")


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
    legend: Legend | None = None,
) -> Path:
    """Overlay ``overlay`` on ``anat`` (same grid) on ``n_slices`` sagittal, coronal and axial slices.

    ``mode='contour'`` draws the outline of a binary mask; ``'labels'`` paints index values with ``colors``
    (index → colour; a label map of FreeSurfer ids must be converted to indices first). Rows: sagittal, coronal,
    axial; each panel is labelled with its plane, scanner coordinate (mm) and side letters (see :data:`VIEWS`).
    ``legend`` (see :func:`legend_groups`) is drawn right of the panels.
    """
    plt = _plt()
    panels = overlay_slices(anat, overlay, n_slices)
    a_all = np.concatenate([p.anat.ravel() for p in panels])
    vmax = float(np.percentile(a_all[a_all > 0], 99.5)) if np.any(a_all > 0) else 1.0
    cmap = _lut(list(colors or ["#000000", "#ff0000"]))
    n_entries = sum(1 + len(entries) for _, entries in legend or [])
    texts = [text for group, entries in legend or [] for text in [group, *(t for t, _ in entries)]]
    longest = max((len(text) for text in texts), default=0)
    column_in = min(2.6, max(1.2, 0.6 + 0.075 * longest))  # room for the swatch and the longest text at 8 pt
    legend_in = 0.0 if not n_entries else column_in * (1 if n_entries <= 34 else 2)
    width, height = 2.9 * n_slices, 8.4 + (0.4 if title else 0.0)
    fig, axes = plt.subplots(3, n_slices, figsize=(width + legend_in, height), facecolor="black", squeeze=False)
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
    right = (width - 0.05) / (width + legend_in)
    if title:  # in its own strip above the panels' titles, centred on the panels (the legend starts at the top)
        fig.suptitle(title, color="white", fontsize=10, x=right / 2, y=1 - 0.12 / height, va="top")
    top = 1 - (0.25 + (0.4 if title else 0.0)) / height
    fig.subplots_adjust(
        left=0.01 * width / (width + legend_in), right=right, bottom=0.01, top=top, wspace=0.04, hspace=0.12
    )
    if n_entries:
        _draw_legend(fig, legend, right + 0.1 / (width + legend_in))
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


def distribution_legend(rows: Sequence[tuple[str, str | None, str | None]]) -> list[tuple[str, str, str]]:
    """``(marker, colour, text)`` of every kind of point :func:`plot_distributions` draws for these rows.

    >>> [text for _, _, text in distribution_legend(_pairs(["ICV", "GM / ICV"]))]
    ['one scan', 'outlier (within age band)']
    >>> [text for _, _, text in distribution_legend(_pairs(["Left X", "Right X", "Brainstem"]))]
    ['left, one scan', 'right, one scan', 'unpaired, one scan', 'outlier (within age band)']
    """
    paired = any(left is not None for _, left, _ in rows)
    legend = [("o", "#3060b0", "left, one scan"), ("^", "#e08020", "right, one scan")] if paired else []
    if any(left is None for _, left, _ in rows):
        legend.append(("s", "#404040", "unpaired, one scan" if paired else "one scan"))
    legend.append(("x", "#e02020", "outlier (within age band)"))
    return legend


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
    """One row per structure (Left/Right homologues share a row: L circles, R triangles; others squares; rows named
    by the label table's display names), one point per scan.

    ``values`` and ``outliers`` are frames (scans × columns); outliers are drawn as red crosses and named with their
    entry of ``labels``. ``reference`` draws a vertical line (e.g. 1 for values relative to the median).
    """
    from brainparc.reports.qc import display_name

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
    ax.set_yticklabels([display_name(name) for name, _, _ in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="y", color="#eeeeee", lw=0.5)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    handles = [ax.scatter([], [], c=c, marker=m, s=14, label=lab) for m, c, lab in distribution_legend(rows)]
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
