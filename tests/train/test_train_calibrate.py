"""Class-bias calibration: the fitted offsets undo a known bias, respect partial labels, and reach the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainparc.train.calibrate import fit_class_offsets, pooled_dice


def _biased(n: int = 20000, c: int = 4, seed: int = 0):
    """Well-separated classes whose log-probabilities carry a bias toward class 3 (the 'small parcel' habit)."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, c, (n,), generator=gen)
    logits = torch.randn(n, c, generator=gen) + 3.0 * torch.nn.functional.one_hot(truth, c)
    logits[:, 3] += 2.5  # the bias
    return torch.log_softmax(logits, 1).half(), truth


def test_offsets_undo_a_known_bias():
    logp, truth = _biased()
    calib = fit_class_offsets(logp, truth, np.eye(4))
    assert calib.offsets[0] == 0.0 and calib.offsets[3] < -1.5  # class 3 pushed back by about its bias
    assert calib.nll_after < calib.nll_before
    assert pooled_dice(logp, truth, np.arange(4), calib.offsets) > pooled_dice(logp, truth, np.arange(4)) + 0.05


def test_partial_labels_count_for_their_whole_group():
    """Voxels labelled only "class 1 or 2" must not push the offsets between 1 and 2; singletons still fix 3."""
    logp, truth = _biased(seed=1)
    grouping = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 1, 0]], float)
    groups = torch.where((truth == 1) | (truth == 2), torch.tensor(4), truth)  # 1 and 2 only known as a pair
    calib = fit_class_offsets(logp, groups, grouping)
    assert calib.offsets[3] < -1.5 and calib.nll_after < calib.nll_before
    # the pair's total is constrained, their split is not: only the weak L2 keeps them together
    assert abs(calib.offsets[1] - calib.offsets[2]) < 0.5


def test_card_calibration_reaches_the_model(tmp_path):
    from brainparc import models

    kw = models.atlas_guided_kwargs(widths=(2, 2, 2, 2, 2), res_depths=(1, 1, 1, 1), bottleneck_depth=1,
                                    patch_size=48, valid_size=32)  # fmt: skip
    net = models.AtlasGuidedNet(**kw)
    path = tmp_path / "w.safetensors"
    offsets = [0.0] * 106 + [-2.0]
    models.save(net, path, preset="brainparc-atlas", atlas=models.bundled_atlas_entry(),
                calibration={"class_log_offsets": offsets})  # fmt: skip
    model, _ = models.load(path)
    assert model.class_offsets[-1] == -2.0
    uniform = torch.full((1, 107, 4, 4, 4), 1 / 107)
    coords = torch.zeros(1, 3, 4, 4, 4)
    with torch.no_grad():
        shifted = model._combine(uniform, coords)
        model.set_class_offsets([0.0] * 107)
        plain = model._combine(uniform, coords)
    torch.testing.assert_close(shifted[:, -1], plain[:, -1] * np.exp(-2.0) / (1 - plain[:, -1] * (1 - np.exp(-2.0))))
    with pytest.raises(ValueError, match="class offsets"):
        model.set_class_offsets([0.0] * 3)
