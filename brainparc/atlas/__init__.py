"""The probabilistic DK-struct atlas on the pipeline's template, and its warp to a subject.

The atlas holds, for every voxel of a 2 mm grid in the space of the MNI ICBM 2009a template that the skull-strip stage
registers to every image (:func:`brainparc.core.skullstrip.register_template`), the probability of each of the 107
BrainParc classes. It was built by ``scripts/build_atlas.py`` from the development label maps (sources and licences in
``docs/models.md``), each registered with that same function, so the atlas is in the space the pipeline's
registration actually produces.

Warping needs no second registration: :class:`~brainparc.core.skullstrip.TemplateFit` carries the template coordinate
of every subject voxel, and :func:`warp_atlas` samples the atlas there (trilinear). Outside the atlas box the prior is
background.

The file (``data/dk_struct_mni2009a_2mm.npz``) stores the probabilities as uint8 (``p × 255``) plus, for every voxel,
the nearest cortical parcel (``cortex_fill``): a subject's cortex may lie where no atlas subject had cortex, and there
the parcel ranking comes from the nearest parcel the atlas knows (weight :data:`FILL_WEIGHT`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ATLAS_FILE", "FILL_WEIGHT", "Atlas", "atlas_argmax", "load_atlas", "warp_atlas"]

#: The bundled atlas file.
ATLAS_FILE = Path(__file__).with_name("data") / "dk_struct_mni2009a_2mm.npz"
#: Probability mass given to the nearest cortical parcel everywhere (a ranking of parcels where the atlas has none).
FILL_WEIGHT = 0.02
#: Floor of every class's probability (the network's evidence can always overrule the prior).
FLOOR = 1e-4


@dataclass(frozen=True)
class Atlas:
    """Class probabilities ``prob`` (float32 ``[107, I, J, K]``, sums to 1) on the grid of ``affine`` (voxel → mm)."""

    prob: np.ndarray
    affine: np.ndarray
    name: str
    sha256: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=2)
def load_atlas(path: str | Path | None = None) -> Atlas:
    """Read the atlas (the bundled one by default): probabilities with the cortex fill and the floor applied."""
    path = Path(path) if path is not None else ATLAS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"atlas file not found: {path} (build it with scripts/build_atlas.py)")
    with np.load(path, allow_pickle=False) as f:
        prob = f["prob"].astype(np.float32)
        fill = f["cortex_fill"].astype(np.intp)
        affine = f["affine"].astype(np.float64)
        name = str(f["name"])
    # in place: the 107-class float array is ~400 MB, and every temporary copy of it costs a second at start-up
    prob /= 255.0
    has_fill = fill > 0
    prob[(fill[has_fill], *np.nonzero(has_fill))] += FILL_WEIGHT
    prob += FLOOR
    prob /= prob.sum(axis=0, keepdims=True)
    return Atlas(prob, affine, name, _sha256(path))


def _voxel_coordinates(affine: np.ndarray, coords):
    """Atlas voxel coordinates (last axis i, j, k) of world coordinates ``coords[..., 3]`` (mm)."""
    import torch

    inv = torch.as_tensor(np.linalg.inv(affine), dtype=torch.float32)
    return coords @ inv[:3, :3].T + inv[:3, 3]


def _reach(ijk, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The atlas box any trilinear sample at voxel coordinates ``ijk[..., 3]`` reads (≥ 2 voxels per axis), or None
    when every sample lies wholly outside the atlas (all its corners read the zero padding)."""
    import torch

    size = torch.tensor(shape, dtype=ijk.dtype)
    reaching = ((ijk > -1) & (ijk < size)).all(dim=-1)
    if not bool(reaching.any()):
        return None
    inside = ijk[reaching]
    lo = inside.floor().amin(dim=0).clamp_min(0).long().tolist()
    hi = inside.ceil().amax(dim=0).long().tolist()
    box = []
    for a, b, n in zip(lo, hi, shape, strict=True):
        b = min(max(b, a + 1), n - 1)
        box.append(slice(min(a, b - 1), b + 1))
    return tuple(box)


def warp_atlas(prob, affine: np.ndarray, coords):
    """Atlas probabilities at the template coordinates ``coords`` (torch ``[B, 3, X, Y, Z]``, mm): ``[B, C, X, Y, Z]``.

    ``prob`` is the atlas as a torch tensor ``[C, I, J, K]`` (any float dtype). Coordinates outside the atlas box
    (including :data:`~brainparc.core.skullstrip.OUTSIDE_TEMPLATE`) get background (class 0) with probability 1.

    Trilinear, and only where it matters: the samples of one window read a small box of the atlas, in which most
    classes hold nothing but their floor value. Those classes equal the box's voxel-wise minimum everywhere, so the
    minimum is sampled once for all of them and only the classes that vary are sampled one by one (on a 64³-window
    run the dense 107-class ``grid_sample`` took a fifth of the parcellation time). Same values as sampling every
    class over the whole atlas, up to float rounding of the sample positions.
    """
    import torch
    import torch.nn.functional as F

    b, c = coords.shape[0], prob.shape[0]
    ijk = _voxel_coordinates(affine, coords.float().permute(0, 2, 3, 4, 1))
    box = _reach(ijk, tuple(prob.shape[1:]))
    if box is None:
        out = torch.zeros((b, c, *coords.shape[2:]), dtype=torch.float32, device=prob.device)
    else:
        crop = prob[(slice(None), *box)].float()
        floor = crop.amin(dim=0, keepdim=True)
        varying = (crop != floor).flatten(1).any(dim=1).nonzero().flatten()
        vol = torch.cat([crop[varying], floor])
        start = torch.tensor([s.start for s in box], dtype=torch.float32)
        span = torch.tensor([s.stop - s.start - 1 for s in box], dtype=torch.float32)
        grid = (2 * (ijk - start) / span - 1).flip(-1)  # grid_sample's last axis is (k, j, i)
        sampled = F.grid_sample(vol[None].expand(b, *vol.shape), grid.to(prob.device), mode="bilinear",
                                padding_mode="zeros", align_corners=True)  # fmt: skip
        out = sampled[:, -1:].expand(b, c, *sampled.shape[2:]).clone()
        out[:, varying] = sampled[:, :-1]
    out[:, :1] += (1.0 - out.sum(dim=1, keepdim=True)).clamp_min(0.0)  # what the atlas box misses is background
    return out


def atlas_argmax(atlas: Atlas, coords: np.ndarray, mask: np.ndarray | None = None, slab: int = 8) -> np.ndarray:
    """The warped prior's most probable class at every voxel (int16 ``[X, Y, Z]``).

    With a brain ``mask``, voxels inside it get the most probable brain class (never background) and voxels outside 0.

    Runs in slabs of ``slab`` voxels along the first axis, so memory stays at ``107 × slab × Y × Z`` floats.
    """
    import torch

    prob = torch.from_numpy(atlas.prob)
    out = np.zeros(coords.shape[1:], dtype=np.int16)
    with torch.inference_mode():
        for start in range(0, coords.shape[1], slab):
            c = torch.from_numpy(np.ascontiguousarray(coords[:, start : start + slab]))[None]
            p = warp_atlas(prob, atlas.affine, c)[0]
            if mask is not None:
                p[0] = -1.0
            out[start : start + slab] = p.argmax(dim=0).numpy().astype(np.int16)
    if mask is not None:
        out[~np.asarray(mask, dtype=bool)] = 0
    return out
