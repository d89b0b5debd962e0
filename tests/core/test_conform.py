"""conform / unconform: LAS orientation, exact inverses, physical-space resampling, cropping."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from core_phantoms import (
    centroids_mm,
    head_phantom,
    left_label_phantom,
    make_img,
    random_affine,
    sphere_labels,
    world_coords,
)

from brainparc.preprocessing import choose_spacing, conform, unconform

SHAPE = (72, 80, 64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("oblique", [0.0, 15.0])
@pytest.mark.parametrize("crop", [False, True])
def test_native_round_trip_is_identity(seed, oblique, crop):
    """spacing=None: random orientation, oblique and anisotropic grids come back bit-exactly."""
    rng = np.random.default_rng(seed)
    zooms = rng.uniform(1.6, 3.0, size=3)
    aff = random_affine(rng, SHAPE, zooms, oblique)
    img = make_img(head_phantom(SHAPE, aff), aff)
    c = conform(img, None, crop_to_head=crop)
    assert nib.aff2axcodes(c.img.affine) == ("L", "A", "S")
    assert c.transform.is_exact
    back = unconform(c.img, c)
    assert back.shape == img.shape
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(back.dataobj), np.asarray(img.dataobj), atol=1e-5)
    # the conformed grid describes the same physical points as the input
    xyz_in = world_coords(img.shape, img.affine)[np.asarray(img.dataobj) == np.asarray(img.dataobj).max()][0]
    xyz_out = world_coords(c.img.shape, c.img.affine)[np.asarray(c.img.dataobj) == np.asarray(c.img.dataobj).max()][0]
    np.testing.assert_allclose(xyz_in, xyz_out, atol=1e-3)


@pytest.mark.parametrize("storage", ["RAS", "LAS", "LIA", "PSR"])
def test_left_stays_left(storage):
    """A left-only phantom (negative RAS x) is at high i in the LAS array and returns to the same voxels."""
    from nibabel import orientations as nio

    base = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS 1 mm reference grid
    base[:3, 3] = [40, -45, -40]
    shape = (81, 91, 81)
    labels = left_label_phantom(shape, base)
    ornt = nio.ornt_transform(nio.axcodes2ornt("LAS"), nio.axcodes2ornt(tuple(storage)))
    data = nio.apply_orientation(labels, ornt)
    aff = base @ nio.inv_ornt_aff(ornt, shape)
    img = make_img(data, aff)
    assert nib.aff2axcodes(img.affine) == tuple(storage)
    c = conform(img, None, crop_to_head=False, order=0)
    arr = np.asarray(c.img.dataobj)
    xyz = world_coords(arr.shape, c.img.affine)[arr > 0]
    assert np.all(xyz[:, 0] < 0)
    assert np.argwhere(arr > 0)[:, 0].mean() > arr.shape[0] / 2  # LAS: i increases toward the left
    back = unconform(arr, c, order=0)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)


def test_infant_atlas_reorients_to_test_sample_grid(shared_data):
    """Spec §9 item 3: the RAS infant atlas reoriented to LAS is the grid of the BrainParc infant samples."""
    seg = nib.load(shared_data / "brainparc/autostrip/atlas/infantile/seg-T1.nii.gz")
    c = conform(seg, None, crop_to_head=False, order=0)
    ref = nib.load(shared_data / "brainparc/sub001_infant_infantile/brain_edge.nii.gz")
    assert c.img.shape == ref.shape
    np.testing.assert_allclose(c.img.affine, ref.affine, atol=1e-3)
    np.testing.assert_allclose(np.diag(c.img.affine)[:3], [-0.802, 0.8, 0.802], atol=1e-3)
    np.testing.assert_allclose(c.img.affine[:3, 3], [98, -134, -72], atol=1e-3)


def test_las_inputs_keep_their_grid(shared_data):
    """sub005 (LAS, oblique, 1 mm) with a 1 mm model: no interpolation, crop keeps every brain voxel."""
    img = nib.load(shared_data / "brainparc/sub005_adult/brain.nii.gz")
    c = conform(img, 1.0)
    assert c.transform.is_exact
    data = np.asarray(img.dataobj)
    assert np.isclose(np.asarray(c.img.dataobj).sum(), data.sum(), rtol=1e-6)
    np.testing.assert_allclose(c.img.affine[:3, :3], img.affine[:3, :3], atol=1e-6)  # obliquity kept
    np.testing.assert_array_equal(np.asarray(unconform(c.img, c).dataobj), data)


def test_resampled_grid_is_physically_correct():
    """Values on the conformed grid equal the analytic phantom at the grid's world positions (no half-voxel shift)."""
    rng = np.random.default_rng(3)
    zooms = np.array([0.7, 1.3, 2.1])
    aff = random_affine(rng, (150, 120, 70), zooms, oblique_deg=10)
    img = make_img(head_phantom((150, 120, 70), aff), aff)
    c = conform(img, 1.0, crop_to_head=False, antialias=False)
    assert not c.transform.is_exact
    np.testing.assert_allclose(c.spacing, [1.0, 1.0, 1.0], atol=1e-9)
    expected = head_phantom(c.img.shape, c.img.affine)
    got = np.asarray(c.img.dataobj)
    inner = expected > 45  # away from the field-of-view border
    assert np.abs(got - expected)[inner].max() < 0.02 * expected.max()


def test_resampled_round_trip_close_and_labels_do_not_shift():
    rng = np.random.default_rng(7)
    shape, zooms = (110, 100, 40), np.array([1.1, 1.25, 3.0])  # thick slices (warned about by validate, not here)
    aff = random_affine(rng, shape, zooms, oblique_deg=8)
    img = make_img(head_phantom(shape, aff), aff)
    c = conform(img, 1.0, crop_to_head=True)
    back = np.asarray(unconform(c.img, c, order=1).dataobj)
    ref = np.asarray(img.dataobj)
    interior = ref > 45
    assert np.abs(back - ref)[interior].max() < 0.05 * ref.max()
    centres = [(-30, 10, 0), (25, -20, 10), (0, 30, -15)]
    labels = make_img(sphere_labels(shape, aff, centres, radius=12), aff)
    cl = conform(labels, 1.0, crop_to_head=False, order=0)
    assert cl.img.get_data_dtype() == np.uint8
    # forward: centroids move by less than 0.1 of the coarsest input voxel (quantisation of the 3 mm input)
    fwd = centroids_mm(np.asarray(cl.img.dataobj), cl.img.affine)
    assert np.abs(fwd - centroids_mm(np.asarray(labels.dataobj), aff)).max() < 0.1 * zooms.max()
    back_lab = np.asarray(unconform(cl.img, cl, order=0).dataobj)
    shift_vox = np.abs(centroids_mm(back_lab, aff) - centroids_mm(np.asarray(labels.dataobj), aff)) / zooms.min()
    assert shift_vox.max() < 0.1


def test_spacing_choice_and_header_noise():
    assert choose_spacing([1.0000001, 0.9999999, 1.0], 1.0) is None
    assert choose_spacing([0.8017, 0.8, 0.802], 0.8) is None
    assert choose_spacing([0.45, 0.45, 1.0], 1.0) == 1.0  # fine scan: resampled down, not processed at 0.45
    assert choose_spacing([1.0, 1.0, 5.0], 0.8) == 0.8
    assert choose_spacing([0.45, 0.45, 0.45], None) is None
    aff = np.diag([-1.0000001, 1.0000001, 0.9999999, 1.0])
    c = conform(make_img(np.ones((40, 40, 40), np.float32), aff), None, crop_to_head=False)
    np.testing.assert_allclose(c.spacing, [1.0, 1.0, 1.0], atol=1e-12)


def test_fine_scan_resampled_down():
    aff = np.diag([-0.45, 0.45, 0.45, 1.0])
    shape = (160, 160, 160)
    img = make_img(head_phantom(shape, aff, radii=(30, 30, 30)), aff)
    c = conform(img, 1.0)
    assert c.spacing == (1.0, 1.0, 1.0)
    assert max(c.img.shape) <= 75


def test_crop_to_head_drops_empty_field_of_view():
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    shape = (200, 220, 260)
    aff[:3, 3] = -np.array(shape) / 2 * [-1, 1, 1]
    img = make_img(head_phantom(shape, aff), aff)
    c = conform(img, None, margin_mm=10)
    assert all(n < s for n, s in zip(c.img.shape, shape, strict=True))
    assert np.isclose(np.asarray(c.img.dataobj).sum(), np.asarray(img.dataobj).sum(), rtol=1e-6)


def test_unconform_channels_last():
    rng = np.random.default_rng(1)
    aff = random_affine(rng, (64, 64, 48), [1.5, 1.5, 2.0], 5)
    img = make_img(head_phantom((64, 64, 48), aff), aff)
    c = conform(img, 1.0)
    probs = np.stack([np.asarray(c.img.dataobj)] * 2, axis=-1)
    back = unconform(probs, c, order=1)
    assert back.shape == (*img.shape, 2)


def test_origin_anchored_grid_keeps_the_first_voxel():
    """anchor='origin': SimpleITK's resampling as the published scripts call it (reference recipe)."""
    img = nib.Nifti1Image(np.random.default_rng(0).random((20, 18, 16)).astype(np.float32), np.diag([-1, 1, 1, 1.0]))
    out = conform(img, 0.8, crop_to_head=False, anchor="origin", antialias=False)
    assert out.img.shape == (25, 22, 20)  # round(n * 1 / 0.8), SimpleITK's size
    np.testing.assert_allclose(out.img.affine[:3, 3], img.affine[:3, 3])
    np.testing.assert_allclose(out.transform.offset, 0)
    np.testing.assert_allclose(np.asarray(out.img.dataobj)[0, 0, 0], np.asarray(img.dataobj)[0, 0, 0], rtol=1e-6)
