"""Partial-label losses, boundary targets, consistency and adaptive weights: hand-computed values (spec §4.4, §7)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from brainparc.train.losses import (
    BranchTargets,
    adaptive_class_weights,
    boundary_loss,
    boundary_targets,
    cascade_loss,
    consistency_loss,
    gradient_f1_loss,
    partial_cross_entropy,
    partial_dice_loss,
    partial_focal_loss,
    soft_erode,
    volume_fractions,
)
from tests.conftest import SHARED_DATA

torch.set_num_threads(1)

# 3 classes; group 0 = {0}, group 1 = {1, 2} (a merged pair, like superior temporal + bankssts)
G = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
# the same classes as a registry: singletons + the merged group
G4 = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]])
# voxels: v1 labelled {0}, v2 labelled {1,2}, v3 ignored
P = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 3, 1, 1)
T = torch.tensor([0, 1, -1]).reshape(1, 3, 1, 1)

# Hand computation: q(v1) = (0.6, 0.4), q(v2) = (0.2, 0.8)
# dice_0 = 2·0.6 / (0.6 + 0.2 + 1) = 2/3 ; dice_1 = 2·0.8 / (0.4 + 0.8 + 1) = 8/11
DICE = 1 - (2 / 3 + 8 / 11) / 2
FOCAL = (0.4**2 * -math.log(0.6) + 0.2**2 * -math.log(0.8)) / 2
CE = (-math.log(0.6) - math.log(0.8)) / 2


def test_partial_dice_merged_group_hand_value():
    assert partial_dice_loss(P, T, G).item() == pytest.approx(DICE, abs=1e-6)


def test_partial_dice_registry_form_equals_partition_form():
    # singletons {1}, {2} are ambiguous at v2 and never certain -> left out; merged group present -> counted
    assert partial_dice_loss(P, torch.tensor([0, 3, -1]).reshape(1, 3, 1, 1), G4).item() == pytest.approx(
        DICE, abs=1e-6
    )


def test_ignored_voxels_do_not_contribute():
    for p3 in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]):
        p = P.clone()
        p[0, :, 2, 0, 0] = torch.tensor(p3)
        assert partial_dice_loss(p, T, G).item() == pytest.approx(DICE, abs=1e-6)
        assert partial_focal_loss(p, T, G).item() == pytest.approx(FOCAL, abs=1e-7)


def test_merged_group_not_penalised_for_either_member():
    t = torch.tensor([1, 1]).reshape(1, 2, 1, 1)
    a = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 2, 1, 1)
    b = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 2, 1, 1)
    for fn in (partial_dice_loss, partial_focal_loss, partial_cross_entropy):
        assert fn(a, t, G).item() == pytest.approx(fn(b, t, G).item(), abs=1e-7)
        assert fn(a, t, G).item() == pytest.approx(0.0, abs=1e-6)


def test_partial_focal_and_ce_hand_values():
    assert partial_focal_loss(P, T, G).item() == pytest.approx(FOCAL, rel=1e-5)
    assert partial_cross_entropy(P, T, G).item() == pytest.approx(CE, rel=1e-5)
    # per-class alpha (0.4, 0.8, 1.0): the merged group gets the members' mean, 0.9
    expected = (0.4 * 0.4**2 * -math.log(0.6) + 0.9 * 0.2**2 * -math.log(0.8)) / 2
    assert partial_focal_loss(P, T, G, alpha=[0.4, 0.8, 1.0]).item() == pytest.approx(expected, rel=1e-5)
    assert partial_focal_loss(P, torch.full_like(T, -1), G).item() == 0.0


def test_weighted_dice_is_a_weighted_mean_not_divided_twice():
    # weights (0.4, 0.8, 1.0) -> group weights (0.4, 0.9); Σ w(1-d) / Σ w
    d0, d1 = 2 / 3, 8 / 11
    expected = (0.4 * (1 - d0) + 0.9 * (1 - d1)) / 1.3
    assert partial_dice_loss(P, T, G, weights=[0.4, 0.8, 1.0]).item() == pytest.approx(expected, abs=1e-6)


def test_identity_grouping_is_ordinary_dice_and_ce():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(2, 4, 5, 5, 5), 1)
    t = torch.randint(0, 4, (2, 5, 5, 5))
    oh = torch.nn.functional.one_hot(t, 4).movedim(-1, 1).float()
    inter, den = (p * oh).sum((0, 2, 3, 4)), (p + oh).sum((0, 2, 3, 4))
    ref = (1 - 2 * inter / den).mean()
    assert partial_dice_loss(p, t, torch.eye(4)).item() == pytest.approx(ref.item(), abs=1e-6)
    ce = torch.nn.functional.nll_loss(torch.log(p), t)
    assert partial_cross_entropy(p, t, torch.eye(4)).item() == pytest.approx(ce.item(), rel=1e-5)


def test_dice_gradient_flows():
    logits = torch.randn(1, 3, 3, 1, 1, requires_grad=True)
    loss = partial_dice_loss(torch.softmax(logits, 1), T, G) + partial_focal_loss(torch.softmax(logits, 1), T, G)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert logits.grad[0, :, 2].abs().max() == 0  # the ignored voxel gets no gradient


def test_boundary_targets_cube():
    lab = torch.zeros(5, 5, 5, dtype=torch.long)
    lab[1:4, 1:4, 1:4] = 1
    oh = torch.nn.functional.one_hot(lab, 2).movedim(-1, 0)[None].float()
    b = boundary_targets(oh)
    assert b[0, 1].sum() == 26  # the cube's surface (27 - centre)
    assert b[0, 1, 2, 2, 2] == 0
    assert b[0, 0].sum() == 54  # background face neighbours; the volume border is not a boundary
    assert soft_erode(oh)[0, 1].sum() == 1


def test_boundary_loss_perfect_prediction_is_small():
    lab = torch.zeros(6, 6, 6, dtype=torch.long)
    lab[1:5, 1:5, 1:5] = 1
    lab[2:4, 2:4, 2:4] = 2
    b = boundary_targets(torch.nn.functional.one_hot(lab, 4).movedim(-1, 0)[None].float())
    assert boundary_loss(b, b, bce_weight=10).item() == pytest.approx(0.0, abs=1e-3)
    assert gradient_f1_loss(b, b).item() < gradient_f1_loss(1 - b, b).item()


def _consistent_prediction():
    lab = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    lab[:, 1:5, 1:5, 1:5] = 1
    lab[:, 2:4, 2:4, 2:4] = 3
    parc_to_tissue = torch.tensor([0, 1, 2, 3, 3])  # 5 parcels
    parc_lab = torch.where(lab == 3, 4, lab)
    tissue = torch.nn.functional.one_hot(lab, 4).movedim(-1, 1).float()
    parc = torch.nn.functional.one_hot(parc_lab, 5).movedim(-1, 1).float()
    return boundary_targets(tissue), tissue, parc, parc_to_tissue


def test_consistency_zero_when_consistent_positive_otherwise():
    b, t, p, m = _consistent_prediction()
    assert consistency_loss(b, t, p, m).item() == pytest.approx(0.0, abs=1e-7)
    p_bad = p.roll(1, dims=1)
    assert consistency_loss(b, t, p_bad, m).item() > 0
    assert consistency_loss(torch.zeros_like(b), t, p, m).item() > 0


def test_cascade_loss_composes_and_weights_are_arguments():
    from brainparc.train.losses import CascadeWeights

    b, t, p, m = _consistent_prediction()
    tgt = BranchTargets(parc=p.argmax(1), tissue=t.argmax(1), boundary=b)
    outs = (b, b, t, t, p, p)
    total, parts = cascade_loss(outs, (tgt, tgt), torch.eye(5), torch.eye(4), m)
    expected = (
        0.3 * (parts["boundary_s"] + parts["boundary_b"])
        + 0.3 * (parts["tissue_s"] + parts["tissue_b"])
        + 0.4 * (parts["parc_s"] + parts["parc_b"])
        + parts["consistency_s"]
        + parts["consistency_b"]
    )
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert parts["consistency_s"] == pytest.approx(0.0, abs=1e-7)
    only_cons = CascadeWeights(boundary=0, tissue=0, parc=0, consistency=1)
    assert cascade_loss(outs, (tgt, tgt), torch.eye(5), torch.eye(4), m, weights=only_cons)[0].item() == pytest.approx(
        0.0, abs=1e-6
    )
    worse = (b, b, t, t, p.roll(1, 1), p)
    assert cascade_loss(worse, (tgt, tgt), torch.eye(5), torch.eye(4), m)[0].item() > total.item()


def spec_path() -> Path:
    """The reference spec beside the shared data (``$BRAINPARC_SHARED_DATA/../docs``, default ``../shared/docs``)."""
    return SHARED_DATA.parent / "docs" / "brainparc-reference.md"


def _spec_alpha_table() -> list[dict[str, str]]:
    spec = spec_path()
    if not spec.is_file():
        pytest.skip(f"spec not found at {spec} (set BRAINPARC_SHARED_DATA to the shared data folder)")
    lines = spec.read_text(encoding="utf-8").splitlines()
    start = lines.index("index,tissue,alpha,mean_volume_fraction_pct")
    return list(csv.DictReader(lines[start : start + 108]))


def test_adaptive_weights_reproduce_spec_values():
    # a few labels from the spec §2.4 table (f = mean volume fraction in %, α = reference value)
    f = np.zeros(107)
    for idx, pct in {1: 0.916, 7: 1.609, 13: 0.083, 49: 0.041, 59: 1.095, 93: 3.665, 101: 0.005}.items():
        f[idx] = pct / 100
    alpha = adaptive_class_weights(f)
    ref = {1: 0.8348, 7: 0.8016, 13: 0.9515, 49: 0.9708, 59: 0.8371, 93: 0.7263, 101: 0.9952}
    for idx, a in ref.items():
        assert alpha[idx] == pytest.approx(a, abs=0.03), idx
    assert alpha[0] == 0.4
    assert alpha[2] == 1.0  # f = 0: absent class, full weight


def test_adaptive_weights_fit_quality_on_whole_spec_table():
    rows = _spec_alpha_table()
    f = np.array([0.0] + [float(r["mean_volume_fraction_pct"]) / 100 for r in rows[1:]])
    ref = np.array([float(r["alpha"]) for r in rows])
    err = np.abs(adaptive_class_weights(f) - ref)[1:]
    assert np.sqrt(np.mean(err**2)) < 0.02  # the spec's fit RMS 0.018
    assert np.mean(err < 0.03) > 0.9
    assert err.max() < 0.11  # worst: CSF (f = 20 %), 0.40 vs 0.503 — documented


def test_volume_fractions():
    lab = np.array([0, 0, 1, 1, 1, 2, -1, 200])
    f = volume_fractions([lab, np.array([1, 2])], num_classes=3)
    assert f.tolist() == pytest.approx([0.0, (0.75 + 0.5) / 2, (0.25 + 0.5) / 2])


def test_strip_loss_perfect_vs_wrong():
    from brainparc.train.losses import strip_loss

    t = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    t[:, 1:5, 1:5, 1:5] = 1
    t[:, 0] = -1  # outside the volume
    good = torch.nn.functional.one_hot(t.clamp(min=0), 2).movedim(-1, 1).float() * 0.998 + 0.001
    bad = good.flip(1)
    assert strip_loss((good, good), (t, t)).item() < 0.05
    assert strip_loss((bad, bad), (t, t)).item() > 1.0


def test_class_weights_metadata_is_json_ready():
    import json

    from brainparc.train.losses import class_weights_metadata

    f = np.zeros(107)
    f[1:] = 1 / 106
    meta = class_weights_metadata(f)
    assert len(meta["alpha"]) == 107 and meta["alpha"][0] == 0.4
    json.dumps(meta)


def test_losses_are_float32_under_autocast():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(1, 4, 6, 6, 6), 1).bfloat16()
    t = torch.randint(0, 4, (1, 6, 6, 6))
    ref = partial_dice_loss(p.float(), t, torch.eye(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = [partial_dice_loss(p, t, torch.eye(4)), partial_focal_loss(p, t, torch.eye(4)), boundary_loss(p, p > 0.3)]
    assert all(x.dtype == torch.float32 for x in out)
    assert out[0].item() == pytest.approx(ref.item(), abs=1e-6)


def test_spec_path_follows_brainparc_shared_data(tmp_path):
    # the skip reason and the lookup use $BRAINPARC_SHARED_DATA (a fresh interpreter: it is read at import)
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = "from tests.train.test_train_losses import spec_path; print(spec_path())"
    env = {**os.environ, "BRAINPARC_SHARED_DATA": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "docs" / "brainparc-reference.md")
