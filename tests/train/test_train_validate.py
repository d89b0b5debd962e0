"""Validation: Dice arithmetic by hand, and the sliding-window validation wired to the dataset's targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainparc.train.data import PatchDataset
from brainparc.train.validate import dice_per_class, plot_learning_curve, validate, write_dice_csv
from tests.train.conftest import make_full_layout

torch.set_num_threads(1)


def test_dice_per_class_by_hand():
    pred = np.array([0, 1, 1, 2, 2, 0])
    target = np.array([0, 1, 2, 2, 2, 3])
    valid = np.array([True, True, True, True, True, False])  # the last voxel is not scored
    d = dice_per_class(pred, target, [1, 2, 3, 4], valid)
    # class 1: P={1,2}, T={1} → 2·1/3; class 2: P={3,4}, T={2,3,4} → 2·2/5; 3: absent from both (scored voxels) → NaN
    np.testing.assert_allclose(d[:2], [2 / 3, 4 / 5])
    assert np.isnan(d[2]) and np.isnan(d[3])


class ConstantCascade(torch.nn.Module):
    """Predicts GM tissue and parcel 1 (left precentral) everywhere."""

    patch_size, valid_size, in_channels = 32, 16, 2

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, parc_b: bool = True) -> tuple[torch.Tensor | None, ...]:
        shape = (x.shape[0], 1, 16, 16, 16)
        bnd = torch.zeros(shape).expand(-1, 4, -1, -1, -1) + self.w
        tissue = torch.zeros(x.shape[0], 4, 16, 16, 16)
        tissue[:, 2] = 1
        parc = torch.zeros(x.shape[0], 107, 16, 16, 16)
        parc[:, 1] = 1
        return bnd, bnd, tissue, tissue, parc, parc if parc_b else None  # the docs/CONTRACTS.md forward


def test_validate_scores_the_sliding_window_prediction(tmp_path):
    from brainparc.inference import predict_parcellation
    from brainparc.train.data import _edge_array

    make_full_layout(tmp_path, n_train=1, n_val=1)
    ds = PatchDataset(tmp_path, "val", patch_size=32)
    card = {"normalisation": "in-mask-zscore"}
    rows = validate(ConstantCascade(), ds, card, device="cpu")
    assert [r["subject"] for r in rows] == ["HCP/s1"]
    vol = ds.load_subject(0)
    t = vol["targets"]
    # the run-time prediction: parcel 1 / GM wherever the predictor labels (it leaves far background at 0)
    res = predict_parcellation(ConstantCascade(), vol["image"], _edge_array(vol["image"]), card, mask=vol["brain"])
    labelled = res.parc == 1
    assert 0 < labelled.sum() < t.size  # both cases occur
    n1 = int((t == 1).sum())
    assert rows[0]["Precentral_L"] == pytest.approx(2 * int((labelled & (t == 1)).sum()) / (labelled.sum() + n1))
    assert rows[0]["Precentral_R"] == 0.0 and np.isnan(rows[0]["Frontal_Sup_L"])
    gm = np.isin(t, (1, 2))
    assert rows[0]["tissue_GM"] == pytest.approx(
        2 * int((gm & (res.tissue == 2)).sum()) / ((res.tissue == 2).sum() + gm.sum())
    )
    assert rows[0]["mean_parc"] == pytest.approx(
        np.nanmean([rows[0][k] for k in ("Precentral_L", "Precentral_R", "Cerebral_WM_L", "Cerebral_WM_R", "CSF")])
    )
    path = write_dice_csv(rows, tmp_path / "v" / "dice.csv")
    assert path.read_text().splitlines()[-1].startswith("mean,")
    png = plot_learning_curve(
        [{"total": 2.0, "epoch": 0}, {"total": 1.0, "epoch": 1, "val_mean_parc": 0.5}], tmp_path / "c.png"
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
