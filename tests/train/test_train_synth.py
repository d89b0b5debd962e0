"""SynthSeg-style generator: geometry, determinism, contrast variation and inversion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from brainparc.train.synth import SynthParams, gaussian_blur, random_spatial_grid, resample, synthesize

torch.set_num_threads(1)


def phantom(shape=(40, 44, 36)) -> torch.Tensor:
    """Nested ellipsoids: 0 background, 24 CSF shell, 3 cortex, 2 white matter, 17 a small 'hippocampus'."""
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = torch.sqrt(sum(g**2 for g in grids))
    lab = torch.zeros(shape, dtype=torch.long)
    lab[r < 0.9] = 24
    lab[r < 0.75] = 3
    lab[r < 0.5] = 2
    lab[(grids[0] - 0.2) ** 2 + grids[1] ** 2 + grids[2] ** 2 < 0.02] = 17
    return lab


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_no_deformation_keeps_labels_exactly():
    lab = phantom()
    img, out = synthesize(lab, gen(0), SynthParams(deform=False))
    assert torch.equal(out, lab)
    assert img.shape == lab.shape and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 + 1e-6


def test_deformation_preserves_label_volumes():
    lab = phantom((48, 48, 48))
    params = SynthParams(scaling=0.0, shear=0.0, rotation_deg=15.0, nonlin_std=2.0)
    _, out = synthesize(lab, gen(1), params)
    assert not torch.equal(out, lab)  # it did move
    for v in (24, 3, 2):
        before, after = int((lab == v).sum()), int((out == v).sum())
        assert after == pytest.approx(before, rel=0.1), v
    assert set(torch.unique(out).tolist()) <= set(torch.unique(lab).tolist())


def test_same_seed_same_output_different_seed_different_contrast():
    lab = phantom()
    a_img, a_lab = synthesize(lab, gen(7))
    b_img, b_lab = synthesize(lab, gen(7))
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    c_img, _ = synthesize(lab, gen(8), SynthParams(deform=False))
    d_img, _ = synthesize(lab, gen(9), SynthParams(deform=False))
    means = [[float(img[lab == v].mean()) for v in (24, 3, 2)] for img in (c_img, d_img)]
    assert np.abs(np.subtract(*means)).max() > 0.05


def test_contrast_inversion_flips_wm_gm_order():
    # T1-like priors: WM (2) bright, cortex (3) darker, CSF (24) dark
    mean = torch.zeros(25)
    std = torch.zeros(25)
    mean[2], mean[3], mean[24], mean[17] = 0.9, 0.55, 0.2, 0.6
    base = SynthParams(deform=False, std_range=(0.0, 0.02), bias_std=0.0, lowres_prob=0.0, gamma_std=0.0)
    lab = phantom()
    for seed in range(3):
        img, _ = synthesize(lab, gen(seed), base, priors=(mean, std))
        assert img[lab == 2].mean() > img[lab == 3].mean()
        inv, _ = synthesize(lab, gen(seed), replace(base, invert_prob=1.0), priors=(mean, std))
        assert inv[lab == 2].mean() < inv[lab == 3].mean()
    # a patch of background alone (a random window outside the head) has no contrast to mirror: it is drawn as it is
    empty = torch.zeros(8, 8, 8, dtype=torch.long)
    img, out = synthesize(empty, gen(0), replace(base, invert_prob=1.0, background_zero=True), priors=(mean, std))
    assert img.shape == (8, 8, 8) and (out == 0).all() and (img == 0).all()


def test_crop_and_odd_sizes():
    lab = phantom((17, 23, 9))
    img, out = synthesize(lab, gen(3), out_shape=(8, 12, 10), centre=(8.0, 11.0, 4.0))
    assert img.shape == out.shape == (8, 12, 10)
    # a pure crop (no deformation) equals slicing
    _, crop = synthesize(lab, gen(3), SynthParams(deform=False), out_shape=(5, 7, 3), centre=(8.0, 11.0, 4.0))
    assert torch.equal(crop, lab[6:11, 8:15, 3:6])
    # even sizes: no half-voxel ties, the window starts at centre - size // 2
    _, crop = synthesize(lab, gen(3), SynthParams(deform=False), out_shape=(6, 8, 4), centre=(8.0, 11.0, 4.0))
    assert torch.equal(crop, lab[5:11, 7:15, 2:6])


def test_background_zero_and_lowres_path():
    lab = phantom()
    img, out = synthesize(lab, gen(4), SynthParams(background_zero=True, lowres_prob=1.0))
    assert torch.all(img[out == 0] == 0)
    assert img[out > 0].std() > 0


def test_identity_grid_and_blur():
    vol = torch.rand(6, 7, 8)
    grid = random_spatial_grid((6, 7, 8), (6, 7, 8), gen(0), SynthParams(deform=False))
    torch.testing.assert_close(resample(vol, grid), vol, atol=1e-5, rtol=0)
    blurred = gaussian_blur(vol, (1.0, 0.0, 2.0))
    assert blurred.shape == vol.shape
    assert blurred.mean().item() == pytest.approx(vol.mean().item(), abs=0.02)
    const = torch.full((5, 5, 5), 3.0)
    torch.testing.assert_close(gaussian_blur(const, (1.0, 1.0, 1.0)), const)


def test_tissue_priors_table():
    from brainparc.train.synth import TISSUE_PRIOR_MEANS, tissue_priors

    mean, std = tissue_priors({2: 3, 3: 2, 24: 1, 0: 0, 165: None}, 200)
    assert mean[2] == pytest.approx(TISSUE_PRIOR_MEANS[3]) and mean[3] == pytest.approx(TISSUE_PRIOR_MEANS[2])
    assert std[2] == pytest.approx(0.08) and std[165] == pytest.approx(0.3) and mean.shape == (200,)


def test_lateral_classes_share_intensities():
    from brainparc.train.synth import lateral_classes

    fs = lateral_classes(2100, "freesurfer")
    assert fs[41] == 2 and fs[42] == 3 and fs[2024] == 1024 and fs[24] == 24 and fs[1024] == 1024
    bp = lateral_classes(107, "brainparc")
    assert bp[2] == 1 and bp[92] == 91 and bp[96] == 95 and bp[97] == 97 and bp[1] == 1
    assert lateral_classes(4, "tissue").tolist() == [0, 1, 2, 3] and lateral_classes(30, "freesurfer")[3] == 3
    lab = torch.zeros(10, 10, 10, dtype=torch.long)
    lab[2:5], lab[5:8] = 2, 41
    img, _ = synthesize(
        lab,
        gen(0),
        SynthParams(
            deform=False, bias_std=0.0, std_range=(0.0, 0.0), blur_sigma=(0, 0), lowres_prob=0.0, noise_std=(0.0, 0.0)
        ),
        classes=lateral_classes(42, "freesurfer"),
    )
    torch.testing.assert_close(img[3, 3, 3], img[6, 3, 3])
