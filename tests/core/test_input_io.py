"""load_t1w / validate_t1w: one-line InputError messages, and nibabel <-> ANTs conversion."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest
from core_phantoms import make_img, random_affine

from brainparc.core.io import ants_affine, ants_to_nib, nib_to_ants
from brainparc.preprocessing import InputError, load_t1w, validate_t1w


def _good(shape=(40, 40, 40), zooms=(1.0, 1.0, 1.0)) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    return make_img(rng.uniform(0, 100, size=shape).astype(np.float32), np.diag([*zooms, 1.0]))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_good_image_and_4d_single_volume(tmp_path):
    img = _good()
    nib.save(img, tmp_path / "t1.nii.gz")
    assert load_t1w(tmp_path / "t1.nii.gz").shape == (40, 40, 40)
    img4 = make_img(np.asarray(img.dataobj)[..., None], img.affine)
    nib.save(img4, tmp_path / "t1_4d.nii.gz")
    loaded = load_t1w(tmp_path / "t1_4d.nii.gz")
    assert loaded.shape == (40, 40, 40)
    np.testing.assert_array_equal(loaded.affine, img.affine)


def test_mgz_is_loaded(tmp_path):
    img = _good()
    nib.save(nib.MGHImage(np.asarray(img.dataobj), img.affine), tmp_path / "t1.mgz")
    assert isinstance(load_t1w(tmp_path / "t1.mgz"), nib.Nifti1Image)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(InputError, match="not found") as exc:
        load_t1w(tmp_path / "nope.nii.gz")
    _one_line(exc)
    nib.save(_good(), tmp_path / "t1.nii.gz")
    raw = (tmp_path / "t1.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cannot read") as exc:
        load_t1w(tmp_path / "trunc.nii.gz")
    _one_line(exc)
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti at all"))
    with pytest.raises(InputError, match="cannot read"):
        load_t1w(tmp_path / "junk.nii.gz")
    assert issubclass(InputError, ValueError)


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (make_img(np.ones((40, 40, 40, 2), np.float32), np.eye(4)), "3-D"),
        (make_img(np.ones((40, 40), np.float32), np.eye(4)), "3-D"),
        (make_img(np.zeros((40, 40, 40), np.float32), np.eye(4)), "all zeros"),
        (make_img(np.full((40, 40, 40), 7, np.float32), np.eye(4)), "constant"),
        (make_img(np.where(np.eye(40)[..., None] > 0, np.nan, 1).astype(np.float32) * np.ones(40), np.eye(4)), "NaN"),
        (make_img(np.full((40, 40, 40), np.inf, np.float32), np.eye(4)), "NaN/Inf"),
        (_good(zooms=(3.5, 3.5, 4.0)), "too large"),
        (_good(shape=(40, 40, 20)), "too small"),
    ],
)
def test_bad_inputs(img, match):
    with pytest.raises(InputError, match=match) as exc:
        validate_t1w(img)
    _one_line(exc)


def test_singular_affine():
    img = _good()
    img._affine = np.diag([1.0, 1.0, 0.0, 1.0])  # nibabel refuses to build such an image; headers can still say so
    with pytest.raises(InputError, match="singular") as exc:
        validate_t1w(img)
    _one_line(exc)


def test_thick_slices_warn_once_but_pass(caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one logged warning, no second copy as a Python warning
        validate_t1w(_good(zooms=(1.0, 1.0, 5.0)))
        assert [r.getMessage() for r in caplog.records] == [
            "thick slices (1x1x5 mm): results will be less accurate; processing anyway"
        ]
        caplog.clear()
        validate_t1w(_good(zooms=(1.0, 1.0, 1.2)))
        assert caplog.records == []


@pytest.mark.parametrize("seed", range(4))
def test_nib_ants_round_trip(seed):
    """ITK is LPS, nibabel RAS: the conversion keeps array order and physical positions."""
    rng = np.random.default_rng(seed)
    shape = (20, 24, 18)
    aff = random_affine(rng, shape, rng.uniform(0.7, 2.0, size=3), oblique_deg=20)
    img = make_img(rng.normal(size=shape).astype(np.float32), aff)
    a = nib_to_ants(img)
    np.testing.assert_allclose(ants_affine(a), aff, atol=1e-5)
    back = ants_to_nib(a)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))
    # ITK's physical point of voxel (1, 2, 3) is the LPS version of nibabel's RAS point
    ras = aff[:3, :3] @ [1, 2, 3] + aff[:3, 3]
    lps = np.asarray(a.origin) + np.asarray(a.direction) @ (np.asarray(a.spacing) * [1, 2, 3])
    np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-4)


def test_mne_sample_3mm_head_is_accepted_with_a_warning(shared_data, caplog):
    """3 mm isotropic (float32 header: 3.0000002) is the limit: processed, with a coarse-voxel warning."""
    img = load_t1w(shared_data / "whole_head/mne_sample/T1.mgz")
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["coarse voxels"]
    assert img.shape == (86, 86, 86)
