"""The DK-struct atlas: building (splat, partial labels), warping (sides, background outside), atlas-only mode."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from brainparc import labels
from brainparc.atlas import atlas_argmax, load_atlas, warp_atlas
from brainparc.atlas.build import AtlasAccumulator, cortex_fill, resolve
from brainparc.core.skullstrip import OUTSIDE_TEMPLATE
from brainparc.inference.recipes import RECIPES
from brainparc.train.labelsets import GroupRegistry, load_declaration

TABLE = labels.dk_struct()
LEFT = {i for i, lab in enumerate(TABLE.labels) if lab.name.startswith("Left ")}
RIGHT = {i for i, lab in enumerate(TABLE.labels) if lab.name.startswith("Right ")}


def _world_grid(x: tuple[float, float], shape=(12, 30, 24)) -> np.ndarray:
    """``[3, X, Y, Z]`` RAS coordinates (mm) of a box spanning ``x`` and the middle of the brain in y and z."""
    xs = np.linspace(*x, shape[0])
    ys, zs = np.linspace(-60, 30, shape[1]), np.linspace(-10, 50, shape[2])
    return np.stack(np.meshgrid(xs, ys, zs, indexing="ij")).astype(np.float32)


def test_splat_conserves_mass_and_skips_ignored():
    acc = AtlasAccumulator(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10), 3)
    targets = np.zeros((4, 4, 4), np.int16)
    targets[:2] = 1
    targets[0, 0, 0] = -1  # ignored
    coords = np.stack(np.meshgrid(*[np.arange(4.0) + 4.3] * 3, indexing="ij")).astype(np.float32)
    coords[:, 3, 3, 3] = OUTSIDE_TEMPLATE  # outside the template: dropped
    acc.add(targets, coords)
    assert acc.known.sum() == pytest.approx(62.0)
    assert acc.mass.sum(axis=1) == pytest.approx([31.0, 31.0, 0.0])


def test_resolve_shares_merged_groups_by_the_full_labels():
    """A merged group's mass follows the singleton estimate at the voxel; where there is none, it is uniform."""
    grouping = np.zeros((4, 3), np.float32)
    grouping[[0, 1, 2], [0, 1, 2]] = 1
    grouping[3, [1, 2]] = 1  # "class 1 or class 2"
    acc = AtlasAccumulator(np.eye(4), (2, 1, 1), 4)
    acc.mass[2, 0] = 1.0  # a full source says class 2 at voxel 0
    acc.mass[3, :] = 1.0  # a partial source says "1 or 2" at both voxels
    acc.known[:] = [2.0, 1.0]
    prob = resolve(acc, grouping, sigma=0)
    np.testing.assert_allclose(prob[:, 0, 0, 0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(prob[:, 1, 0, 0], [0.0, 0.5, 0.5])


def test_cortex_fill_takes_the_nearest_parcel():
    prob = np.zeros((3, 5, 1, 1), np.float32)
    prob[0] = 1.0
    prob[:, 0, 0, 0] = [0, 1, 0]
    prob[:, 4, 0, 0] = [0, 0, 1]
    fill = cortex_fill(prob, np.array([1, 2]))
    assert fill[:2, 0, 0].tolist() == [1, 1] and fill[3:, 0, 0].tolist() == [2, 2]


def test_left_box_gets_left_labels_and_outside_is_background():
    """A box in the left hemisphere (RAS x < 0) warps to left structures; coordinates off the template to background."""
    atlas = load_atlas()
    for side, x, other in ((LEFT, (-60.0, -15.0), RIGHT), (RIGHT, (15.0, 60.0), LEFT)):
        lab = atlas_argmax(atlas, _world_grid(x), mask=np.ones((12, 30, 24), bool))
        values, counts = np.unique(lab, return_counts=True)
        on_side = counts[np.isin(values, list(side))].sum()
        assert on_side > 0.8 * lab.size and counts[np.isin(values, list(other))].sum() == 0
    coords = torch.full((1, 3, 2, 2, 2), OUTSIDE_TEMPLATE)
    p = warp_atlas(torch.from_numpy(atlas.prob), atlas.affine, coords)
    assert torch.allclose(p[0, 0], torch.ones(2, 2, 2)) and torch.allclose(p.sum(1), torch.ones(1, 2, 2, 2))


def test_warp_reads_only_the_classes_that_vary_and_matches_the_dense_warp():
    """Sampling a crop and only its non-floor classes gives the dense trilinear warp of all 107 classes over the whole
    atlas, for windows inside, across the edge of and outside the atlas box."""
    import torch.nn.functional as F

    atlas = load_atlas()
    prob = torch.from_numpy(atlas.prob)
    inv = np.linalg.inv(atlas.affine)
    size = np.array(atlas.prob.shape[1:]) - 1
    for lo, hi in (((-40.0, -10.0)), ((60.0, 110.0)), ((300.0, 320.0))):  # inside; across the box edge; outside
        coords = torch.from_numpy(_world_grid((lo, hi), (9, 11, 7)))[None].repeat(2, 1, 1, 1, 1)
        coords[1] += 3.7  # a batch of two different windows
        ijk = np.einsum("ij,bj...->bi...", inv[:3, :3], coords.numpy()) + inv[:3, 3, None, None, None]
        grid = torch.from_numpy(np.moveaxis(2 * ijk / size[:, None, None, None] - 1, 1, -1)[..., ::-1].copy()).float()
        dense = F.grid_sample(prob[None].expand(2, *prob.shape), grid, align_corners=True)
        dense[:, :1] += (1 - dense.sum(1, keepdim=True)).clamp_min(0)
        torch.testing.assert_close(warp_atlas(prob, atlas.affine, coords), dense, atol=1e-5, rtol=0)  # floor: 1e-4


def test_atlas_covers_every_class_and_sums_to_one():
    atlas = load_atlas()
    assert atlas.prob.shape[0] == len(TABLE)
    np.testing.assert_allclose(atlas.prob.sum(axis=0), 1.0, atol=1e-4)
    assert (atlas.prob.reshape(len(TABLE), -1).max(axis=1) > 0.15).all()  # every class is somewhere in the atlas


def test_untrained_network_gives_the_atlas_answer():
    """With a uniform cascade output the product of experts is the prior: the design's starting point."""
    from brainparc.models import AtlasGuidedNet, atlas_guided_kwargs, attach_bundled_atlas

    kw = atlas_guided_kwargs(widths=(2, 2, 2, 2, 2), res_depths=(1, 1, 1, 1), bottleneck_depth=1, patch_size=48,
                             valid_size=32)  # fmt: skip
    net = AtlasGuidedNet(**kw).eval()
    attach_bundled_atlas(net)
    uniform = torch.full((1, 107, 32, 32, 32), 1 / 107)
    coords = torch.from_numpy(_world_grid((-40.0, 40.0), (32, 32, 32)))[None]
    with torch.no_grad():
        np.testing.assert_allclose(net._combine(uniform, coords).numpy(), net.prior(coords).numpy(), atol=1e-5)


def test_weights_for_another_atlas_are_refused(tmp_path):
    from brainparc import models

    kw = models.atlas_guided_kwargs(widths=(2, 2, 2, 2, 2), res_depths=(1, 1, 1, 1), bottleneck_depth=1,
                                    patch_size=48, valid_size=32)  # fmt: skip
    net = models.AtlasGuidedNet(**kw)
    path = tmp_path / "w.safetensors"
    models.save(net, path, preset="brainparc-atlas", atlas={"name": "other", "sha256": "0" * 64})
    with pytest.raises(models.CheckpointError, match="atlas"):
        models.load(path)
    models.save(net, path, preset="brainparc-atlas", atlas=models.bundled_atlas_entry())
    model, card = models.load(path)
    assert model.atlas.shape[0] == 107 and card["atlas"]["sha256"] == load_atlas().sha256


def test_atlas_only_parcellate_runs_on_a_small_image(tmp_path, monkeypatch):
    """``--model atlas`` end to end on a small skull-stripped phantom: labels inside the mask, provenance says so."""
    from brainparc.cli.main import main
    from brainparc.core import skullstrip

    shape = (40, 48, 40)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [40.0, -56.0, -30.0]  # LAS, 2 mm, centred on the MNI brain
    data = np.zeros(shape, np.float32)
    data[8:32, 8:40, 8:32] = 100.0
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "t1.nii.gz")

    calls = []

    def identity_fit(img, **kw):  # no registration in CI: the image is already in template space
        calls.append(kw)
        ijk = np.indices(img.shape, dtype=np.float32)
        coords = np.tensordot(img.affine[:3, :3], ijk, axes=1) + img.affine[:3, 3, None, None, None]
        return skullstrip.TemplateFit(np.ones(img.shape, bool), coords.astype(np.float32), "brain", 0.0)

    monkeypatch.setattr(skullstrip, "register_template", identity_fit)
    code = main(["parcellate", str(tmp_path / "t1.nii.gz"), "-o", str(tmp_path / "o"), "--model", "atlas",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    # skull-stripped input: one brain-template registration, with the recipe's SyN levels
    assert [(kw["template"], kw["syn_iterations"]) for kw in calls] == [("brain", RECIPES["fast"].atlas_syn_iterations)]
    out = np.asarray(nib.load(tmp_path / "o" / "brainparc_dseg.nii.gz").dataobj)
    mask = np.asarray(nib.load(tmp_path / "o" / "brain_mask.nii.gz").dataobj) > 0
    assert mask[data > 0].all() and ((out > 0) == mask).all()  # every brain voxel labelled, nothing outside
    # the image's voxel axis 0 runs toward the left (LAS): its high-i half is the left hemisphere
    left_half = out[shape[0] // 2 + 4 :][out[shape[0] // 2 + 4 :] > 0]
    assert np.isin(left_half, list(LEFT)).mean() > 0.8
    tissue = np.asarray(nib.load(tmp_path / "o" / "tissue_dseg.nii.gz").dataobj)
    np.testing.assert_array_equal(tissue, TABLE.to_tissue(out))  # fast recipe: tissue is each parcel's tissue
    probs = np.asarray(nib.load(tmp_path / "o" / "tissue_probseg.nii.gz").dataobj)
    # the probabilities are the parcels' sums; their argmax may differ from the argmax parcel's tissue, and the
    # phantom's box holds atlas background that fill_brain turned into parcels
    assert (probs.argmax(-1)[mask] == tissue[mask]).mean() > 0.8
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["atlas"]["sha256"] == load_atlas().sha256 and prov["models"]["parcellation"]["preset"] == "atlas-only"
    assert set(prov["mask_vs_labels"]) == {"dice", "mask_unlabelled", "labels_outside"}  # the QC number is recorded


def test_brainparc_index_round_trips_through_freesurfer_ids(shared_data):
    """The official sub005 labels → FreeSurfer ids → BrainParc indices is the identity (and every id is distinct)."""
    dk = np.rint(np.asarray(nib.load(shared_data / "brainparc/sub005_adult/dk-struct.nii.gz").dataobj)).astype(int)
    fs = TABLE.to_freesurfer(dk)
    ids = TABLE.freesurfer_ids
    assert len(set(ids.tolist())) == len(ids)
    lut = np.zeros(int(ids.max()) + 1, np.int64)
    lut[ids] = np.arange(len(ids))
    back = lut[fs]
    np.testing.assert_array_equal(back, dk)
    assert len(np.unique(dk)) == 107


def test_dkt31_declaration_groups_merge_into_the_right_classes():
    registry = GroupRegistry()
    compiled = registry.compile(load_declaration("dkt31_aseg"))
    g = registry.grouping
    bankssts = next(i for i, lab in enumerate(TABLE.labels) if lab.abbreviation == "Temporal_Sup_Banks_L")
    assert g[compiled.lut[1030], bankssts] == 1
