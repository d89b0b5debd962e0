"""Per-branch targets of the cascade from a patch of parcel group ids (pure tensor code, spec §4.3).

The small branch sees the centre ``valid³`` of the ``patch³`` window; the big branch the whole window at ``big³``.
Label downsampling for the big branch samples, for output voxel i, the input voxel that contains its centre,
``floor((i + ½)·patch/big)`` — the same point that trilinear ``align_corners=False`` resampling of the input uses, which
fixes the reference's half-voxel-shifted ``floor(i·patch/big)`` nearest resize (§7 item 12).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from brainparc.train.labelsets import IGNORE, NUM_TISSUES
from brainparc.train.losses import BranchTargets, boundary_targets, soft_erode

__all__ = ["branch_targets", "centre_crop", "centred_nearest_resize", "tissue_onehot"]


def centre_crop(x: Tensor, size: int) -> Tensor:
    """Centre ``size³`` of the last three axes."""
    sl = []
    for n in x.shape[-3:]:
        if size > n:
            raise ValueError(f"cannot crop {size} from {n}")
        lo = (n - size) // 2
        sl.append(slice(lo, lo + size))
    return x[(..., *sl)]


def centred_nearest_resize(x: Tensor, size: int) -> Tensor:
    """Nearest resize of the last three axes to ``size³`` sampling input voxel ``floor((i + ½)·n/size)``."""
    out = x
    for axis, n in zip((-3, -2, -1), x.shape[-3:], strict=True):
        idx = torch.floor((torch.arange(size, device=x.device, dtype=torch.float64) + 0.5) * n / size).long()
        out = out.index_select(out.dim() + axis, idx.clamp(max=n - 1))
    return out


def tissue_onehot(tissue: Tensor, num_tissues: int = NUM_TISSUES) -> tuple[Tensor, Tensor]:
    """One-hot ``[B, 4, ...]`` of definite tissue targets (ids < 4) and the mask ``[B, 1, ...]`` of those voxels.

    Tissue group ids ≥ 4 (merged tissues, e.g. "WM or CSF") and ``IGNORE`` give an all-zero one-hot and mask 0.
    """
    definite = (tissue >= 0) & (tissue < num_tissues)
    oh = F.one_hot(torch.where(definite, tissue, torch.zeros_like(tissue)).long(), num_tissues)
    oh = oh.movedim(-1, 1).float() * definite.unsqueeze(1)
    return oh, definite.unsqueeze(1).float()


def _one_branch(parc: Tensor, tissue_of_group: Tensor) -> BranchTargets:
    lut = torch.cat([tissue_of_group.to(parc.device).long(), torch.tensor([IGNORE], device=parc.device)])
    tissue = lut[parc.long()]  # index -1 -> IGNORE (last entry)
    oh, definite = tissue_onehot(tissue)
    # A boundary target is known where the voxel and its 6 neighbours have a definite tissue.
    return BranchTargets(
        parc=parc.long(), tissue=tissue, boundary=boundary_targets(oh), boundary_mask=soft_erode(definite)
    )


def branch_targets(
    parc: Tensor, tissue_of_group: Tensor, valid_size: int = 96, big_size: int = 96
) -> tuple[BranchTargets, BranchTargets]:
    """(small, big) branch targets from a ``[B, P, P, P]`` patch of parcel group ids (``IGNORE`` = -1).

    Tissue targets follow from the parcel groups (``GroupRegistry.tissue_of_group``), boundary targets from the
    tissue one-hot of each branch (one-hot − 6-connected erosion), masked where any tissue in the 6-neighbourhood is
    unknown.
    """
    if parc.dim() != 4:
        raise ValueError(f"parc must be [B, X, Y, Z], got {tuple(parc.shape)}")
    small = _one_branch(centre_crop(parc, valid_size), tissue_of_group)
    big = _one_branch(centred_nearest_resize(parc, big_size), tissue_of_group)
    return small, big
