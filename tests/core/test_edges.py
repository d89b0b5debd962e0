"""Reference Sobel edge map (spec §3.3, §9 item 2)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from brainparc.core.edges import sobel_magnitude
from brainparc.core.intensity import zscore_official
from brainparc.preprocessing import sobel_edges


def _itk_sobel_bruteforce(x: np.ndarray) -> np.ndarray:
    """Direct 3x3x3 correlations with ITK's kernels and edge replication, for comparison."""
    stencil = np.array([[1, 3, 1], [3, 6, 3], [1, 3, 1]], float)
    total = np.zeros(x.shape)
    for axis in range(3):
        k = np.zeros((3, 3, 3))
        for d, sign in ((0, -1.0), (2, 1.0)):
            sl = [slice(None)] * 3
            sl[axis] = d
            k[tuple(sl)] = sign * stencil
        total += ndi.correlate(x.astype(float), k, mode="nearest") ** 2
    return np.sqrt(total)


def test_sobel_matches_bruteforce_kernels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(17, 12, 9))
    np.testing.assert_allclose(sobel_magnitude(x), _itk_sobel_bruteforce(x), rtol=1e-10, atol=1e-10)


def test_sobel_ignores_spacing_and_keeps_grid():
    rng = np.random.default_rng(1)
    data = rng.uniform(0, 100, size=(20, 22, 24)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([-0.8, 1.0, 3.0, 1.0]))
    out = sobel_edges(img)
    assert out.get_data_dtype() == np.int16
    assert out.shape == img.shape
    np.testing.assert_array_equal(out.affine, img.affine)
    expected = np.trunc(_itk_sobel_bruteforce(zscore_official(data))).astype(np.int16)
    assert np.mean(np.asarray(out.dataobj) != expected) < 1e-3


def test_sub005_conformance(shared_data):
    """≥ 99.998 % of voxels equal to the shipped int16 edge map, never off by more than 1."""
    d = shared_data / "brainparc/sub005_adult"
    ours = np.asarray(sobel_edges(nib.load(d / "brain.nii.gz")).dataobj)
    ref = np.asarray(nib.load(d / "brain_edge.nii.gz").dataobj)
    differ = int(np.count_nonzero(ours != ref))
    assert differ / ref.size <= 2e-5, differ
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_edges_of_a_brain_in_a_large_background_are_computed_only_around_it():
    """The edge map is computed on the brain's box only; it equals the whole-grid Sobel everywhere, also where the
    brain touches the grid border (edge replication there) and for a background that is not zero."""
    from brainparc.core.edges import sobel_edges_array

    rng = np.random.default_rng(2)
    for background, box in ((0.0, np.s_[5:14, 0:7, 9:20]), (-3.0, np.s_[0:4, 3:9, 12:24])):
        x = np.full((20, 16, 24), background)
        x[box] = rng.uniform(10, 100, size=x[box].shape)
        expected = _itk_sobel_bruteforce(zscore_official(x))
        np.testing.assert_allclose(sobel_edges_array(x, np.float64), expected, rtol=1e-12, atol=1e-12)
    flat = np.full((6, 6, 6), 7.0)
    assert not sobel_edges_array(flat, np.float64).any()
