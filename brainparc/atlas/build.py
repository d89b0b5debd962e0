"""Building the probabilistic atlas from registered label maps (``scripts/build_atlas.py`` wires these).

Each source is a label map on its own grid with the template coordinate of every voxel (from
:func:`brainparc.core.skullstrip.register_template`) and a label declaration (:mod:`brainparc.train.labelsets`):
every voxel's target is a *group* of classes (a singleton for full labels, e.g. "any left cortical parcel" for aseg's
cortex, IGNORE where the source says nothing). Voxels are splatted (trilinear weights) into the atlas grid:

* ``mass[g]``: how much of group ``g`` landed in each atlas voxel, summed over sources;
* ``known``: how much declared (non-ignored) mass landed there.

:func:`resolve` turns the group masses into class probabilities: singleton masses count for their class; a merged
group's mass is shared among its members in proportion to the singleton-only estimate at that voxel (uniformly where
that is empty) - partial label sets count only for the classes they label. Masses are smoothed (Gaussian, ``sigma``
atlas voxels) before dividing by ``known``: a kernel density estimate that fills the gaps a shrinking warp leaves.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["AtlasAccumulator", "atlas_grid", "cortex_fill", "resolve"]


def atlas_grid(template_affine: np.ndarray, template_shape: tuple[int, ...], spacing: float = 2.0):
    """The atlas grid over the template's box at ``spacing`` mm: ``(affine, shape)``."""
    factor = spacing / float(np.sqrt((np.asarray(template_affine)[:3, :3] ** 2).sum(axis=0))[0])
    affine = np.asarray(template_affine, dtype=np.float64) @ np.diag([factor, factor, factor, 1.0])
    shape = tuple(int(np.ceil(n / factor)) for n in template_shape[:3])
    return affine, shape


class AtlasAccumulator:
    """Group masses and declared mass on the atlas grid, accumulated source by source."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int], n_groups: int) -> None:
        self.affine, self.shape = np.asarray(affine, dtype=np.float64), tuple(shape)
        self.mass = np.zeros((n_groups, int(np.prod(shape))), dtype=np.float32)
        self.known = np.zeros(int(np.prod(shape)), dtype=np.float32)

    def add(self, targets: np.ndarray, coords: np.ndarray) -> None:
        """Splat one source: ``targets`` (group ids, IGNORE = -1) and ``coords`` (``[3, ...]`` template mm)."""
        from brainparc.core.skullstrip import OUTSIDE_TEMPLATE

        keep = (targets >= 0) & (coords[0] > OUTSIDE_TEMPLATE / 2)
        groups = targets[keep].astype(np.int64)
        order = np.argsort(groups, kind="stable")
        groups = groups[order]
        xyz = coords[:, keep][:, order].astype(np.float64)
        inv = np.linalg.inv(self.affine)
        present, starts = np.unique(groups, return_index=True)
        stops = np.append(starts[1:], groups.size)
        size = np.asarray(self.shape)[:, None]
        for g, a, b in zip(present, starts, stops, strict=True):  # one group at a time: bincounts of its voxels only
            ijk = inv[:3, :3] @ xyz[:, a:b] + inv[:3, 3:4]
            base = np.floor(ijk).astype(np.int64)
            frac = ijk - base
            for corner in np.ndindex(2, 2, 2):
                c = np.asarray(corner)[:, None]
                idx = base + c
                w = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=0)
                inside = np.all((idx >= 0) & (idx < size), axis=0) & (w > 0)
                flat = np.ravel_multi_index(tuple(idx[:, inside]), self.shape)
                counts = np.bincount(flat, weights=w[inside], minlength=self.known.size).astype(np.float32)
                self.mass[g] += counts
                self.known += counts


def resolve(acc: AtlasAccumulator, grouping: np.ndarray, sigma: float = 1.0, min_known: float = 0.5) -> np.ndarray:
    """Class probabilities ``[C, I, J, K]`` (float32) from the accumulated group masses (module docstring).

    ``grouping`` is the registry's group × class 0/1 matrix. Voxels with less than ``min_known`` declared mass after
    smoothing are background.
    """
    n_cls = grouping.shape[1]
    shape = acc.shape

    def smooth(v: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(v.reshape(shape), sigma, mode="constant").ravel() if sigma > 0 else v

    known = smooth(acc.known)
    singles = np.stack([smooth(acc.mass[c]) for c in range(n_cls)])
    share = singles / np.maximum(singles.sum(axis=0, keepdims=True), 1e-12)
    prob = singles.copy()
    for g in range(n_cls, acc.mass.shape[0]):
        if not acc.mass[g].any():
            continue
        members = np.flatnonzero(grouping[g])
        m = smooth(acc.mass[g])
        part = share[members]
        total = part.sum(axis=0)
        part = np.where(total > 1e-6, part / np.maximum(total, 1e-12), 1.0 / len(members))
        prob[members] += part * m
    out = np.zeros((n_cls, known.size), dtype=np.float32)
    ok = known >= min_known
    out[:, ok] = prob[:, ok] / known[ok]
    out[0, ~ok] = 1.0
    out /= np.maximum(out.sum(axis=0, keepdims=True), 1e-12)
    return out.reshape(n_cls, *shape)


def cortex_fill(prob: np.ndarray, cortical: np.ndarray, min_mass: float = 0.05) -> np.ndarray:
    """For every voxel, the most probable cortical parcel at the nearest voxel with ≥ ``min_mass`` cortex (uint8).

    ``cortical`` is the list of cortical class indices. Where the nearest such voxel is on the other side of the
    midline, the parcel is still that of the nearest cortex: the network's evidence decides the hemisphere.
    """
    ctx = prob[cortical]
    has = ctx.sum(axis=0) >= min_mass
    best = np.asarray(cortical)[np.argmax(ctx, axis=0)]
    if not has.any():
        return np.zeros(prob.shape[1:], dtype=np.uint8)
    _, nearest = ndi.distance_transform_edt(~has, return_indices=True)
    return best[tuple(nearest)].astype(np.uint8)
