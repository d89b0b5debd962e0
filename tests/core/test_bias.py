"""N4 bias-field correction via antspyx."""

from __future__ import annotations

import numpy as np
from core_phantoms import make_img, world_coords

from brainparc.preprocessing import bias_correct


def test_n4_flattens_a_smooth_bias_field():
    shape = (64, 64, 64)
    aff = np.diag([-2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [63, -63, -63]
    xyz = world_coords(shape, aff)
    r = np.sqrt((xyz**2).sum(-1))
    tissue = np.where(r < 30, 100.0, np.where(r < 50, 60.0, 0.0))
    tissue[(np.abs(xyz[..., 0]) < 8) & (r < 30)] = 60.0
    bias = 1.0 + 0.3 * xyz[..., 2] / 60.0 + 0.15 * xyz[..., 0] / 60.0
    rng = np.random.default_rng(0)
    data = (tissue * bias + rng.normal(0, 1, shape) * (tissue > 0)).astype(np.float32)
    img = make_img(data, aff)
    out = bias_correct(img, nthreads=2)
    assert out.shape == img.shape
    np.testing.assert_array_equal(out.affine, img.affine)
    corrected = np.asarray(out.dataobj)
    inner = (r < 26) & (np.abs(xyz[..., 0]) > 12)

    def cov(a):
        return a[inner].std() / a[inner].mean()

    assert cov(corrected) < 0.5 * cov(data)
