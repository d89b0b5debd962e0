"""Normalisation recipes."""

from __future__ import annotations

import numpy as np
import pytest

from brainparc.preprocessing import normalise, zscore_in_mask, zscore_official


def test_official_zscore_clips_and_includes_background():
    rng = np.random.default_rng(0)
    a = np.zeros((50, 50, 50), np.float32)
    a[10:40, 10:40, 10:40] = rng.uniform(100, 200, size=(30, 30, 30))
    a[0, 0, 0] = 1e6  # a single hot voxel is clipped at the 99.999th percentile
    z = zscore_official(a)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    assert z[0, 0, 0] < 5
    assert z[0, 0, 1] < 0  # background is below the whole-volume mean


def test_in_mask_zscore_does_not_depend_on_field_of_view():
    rng = np.random.default_rng(1)
    brain = rng.uniform(100, 200, size=(20, 20, 20)).astype(np.float32)
    small = np.pad(brain, 5)
    large = np.pad(brain, 40)
    zs = zscore_in_mask(small, small > 0)[5:-5, 5:-5, 5:-5]
    zl = zscore_in_mask(large, large > 0)[40:-40, 40:-40, 40:-40]
    np.testing.assert_allclose(zs, zl, atol=1e-5)
    zo_s = zscore_official(small)[5:-5, 5:-5, 5:-5]
    zo_l = zscore_official(large)[40:-40, 40:-40, 40:-40]
    assert np.abs(zo_s - zo_l).max() > 0.1  # the reference recipe does (spec §7 item 29)


def test_normalise_dispatch():
    a = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    np.testing.assert_array_equal(normalise(a, "official-zscore"), zscore_official(a))
    mm = normalise(a, "minmax")
    assert mm.min() == -1 and mm.max() == pytest.approx(1)
    with pytest.raises(ValueError, match="needs a brain mask"):
        normalise(a, "in-mask-zscore")
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(a, "nope")
