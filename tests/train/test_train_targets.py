"""Per-branch targets: centre crop, centre-aligned nearest downsampling, tissue and boundary targets with masks."""

from __future__ import annotations

import torch

from brainparc.train.labelsets import IGNORE, GroupRegistry, builtin_declaration
from brainparc.train.targets import branch_targets, centre_crop, centred_nearest_resize

torch.set_num_threads(1)


def test_centre_crop_and_resize_indices():
    x = torch.arange(10).view(10, 1, 1).expand(10, 10, 10)
    assert centre_crop(x, 6)[:, 0, 0].tolist() == [2, 3, 4, 5, 6, 7]
    # 10 -> 6: voxel centres (i + 0.5)·10/6 -> floor: 0, 2, 4, 5, 7, 9 (symmetric, unlike floor(i·10/6))
    assert centred_nearest_resize(x, 6)[:, 0, 0].tolist() == [0, 2, 4, 5, 7, 9]
    assert centred_nearest_resize(x, 10).equal(x)


def test_branch_targets_full_and_partial_labels():
    reg = GroupRegistry()
    reg.compile(builtin_declaration("full"))
    comp = reg.compile(builtin_declaration("dkt31_aseg"))
    tog = torch.as_tensor(reg.tissue_of_group)
    parc = torch.zeros(1, 12, 12, 12, dtype=torch.long)
    parc[:, 2:10, 2:10, 2:10] = 1  # precentral (GM)
    parc[:, 4:8, 4:8, 4:8] = IGNORE  # unlabelled WM of DKT31 data
    small, big = branch_targets(parc, tog, valid_size=8, big_size=6)
    assert small.parc.shape == (1, 8, 8, 8) and big.parc.shape == (1, 6, 6, 6)
    assert small.tissue[0, 0, 0, 0] == 2 and small.tissue[0, 4, 4, 4] == IGNORE
    assert small.boundary.shape == (1, 4, 8, 8, 8) and small.boundary_mask.shape == (1, 1, 8, 8, 8)
    # GM voxels next to the ignored WM have an unknown boundary target; far ones are known
    assert small.boundary_mask[0, 0, 1, 3, 3] == 0 and small.boundary_mask[0, 0, 0, 0, 0] == 1
    assert small.boundary[0, 2].sum() > 0
    assert reg.tissue_of_group[comp.in_brain_zero] == 3  # DKT31's unlabelled brain is white matter
