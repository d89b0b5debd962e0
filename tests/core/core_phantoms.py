"""Phantom images for the preprocessing tests: analytic volumes on arbitrary (oblique, flipped, anisotropic) grids."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np


def rotation(angles_deg) -> np.ndarray:
    """Rotation matrix from three Euler angles (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_affine(rng: np.random.Generator, shape, zooms, oblique_deg: float = 0.0) -> np.ndarray:
    """An affine with a random axis permutation and flips, ``zooms``, an oblique rotation, centred on the origin."""
    perm = rng.permutation(3)
    flips = rng.choice([-1.0, 1.0], size=3)
    base = np.zeros((3, 3))
    for i, p in enumerate(perm):
        base[p, i] = flips[i] * zooms[i]
    rot = rotation(rng.uniform(-oblique_deg, oblique_deg, size=3)) if oblique_deg else np.eye(3)
    aff = np.eye(4)
    aff[:3, :3] = rot @ base
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + rng.uniform(-5, 5, size=3)
    return aff


def world_coords(shape, affine) -> np.ndarray:
    """World (RAS mm) coordinates of every voxel, shape (*shape, 3)."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def head_phantom(shape, affine, radii=(60.0, 75.0, 65.0)) -> np.ndarray:
    """Ellipsoidal 'head' in world space: sharp outer edge (like skin on air), smooth inside, with a bright
    left-hemisphere bump (x < 0)."""
    xyz = world_coords(shape, affine)
    r = np.sqrt(sum((xyz[..., i] / radii[i]) ** 2 for i in range(3)))
    head = np.where(r < 1, 0.3 + (1 - r), 0.0)  # exactly 0 outside the ellipsoid
    blob = np.exp(-(((xyz[..., 0] + 30) / 12) ** 2 + (xyz[..., 1] / 15) ** 2 + (xyz[..., 2] / 15) ** 2))
    return (100 * head * (1 + blob)).astype(np.float32)


def left_label_phantom(shape, affine) -> np.ndarray:
    """uint8 labels: 1 = left hemisphere-like blob (world x < -10 mm) inside an ellipsoid."""
    xyz = world_coords(shape, affine)
    inside = (xyz[..., 0] / 60) ** 2 + (xyz[..., 1] / 75) ** 2 + (xyz[..., 2] / 65) ** 2 < 1
    return (inside & (xyz[..., 0] < -10)).astype(np.uint8)


def sphere_labels(shape, affine, centres, radius: float = 10.0) -> np.ndarray:
    """Labels 1..n: spheres of ``radius`` mm at world ``centres``."""
    xyz = world_coords(shape, affine)
    out = np.zeros(shape, dtype=np.uint8)
    for k, c in enumerate(centres, start=1):
        out[np.sum((xyz - np.asarray(c)) ** 2, axis=-1) < radius**2] = k
    return out


def centroids_mm(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World centroid of each label 1..max."""
    out = []
    for k in range(1, int(labels.max()) + 1):
        ijk = np.argwhere(labels == k).mean(axis=0)
        out.append(affine[:3, :3] @ ijk + affine[:3, 3])
    return np.array(out)


ORIENTATION_CASES = list(itertools.product(range(4), [0.0, 12.0]))


def make_img(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    return img
