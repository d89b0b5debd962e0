"""Age-aware QC: flags scale with the subject's own intracranial volume (infant and adult alike)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainparc.reports.qc import BRAIN, ICV, age_band, bands_for, participant_flags, robust_z


def _brain(scale: float) -> dict[str, float]:
    vols = {ICV: 1.4e6 * scale, BRAIN: 1.2e6 * scale, "Tissue CSF": 2e5 * scale, "Tissue GM": 6e5 * scale}
    vols["Tissue WM"] = 6e5 * scale
    vols.update({f"{side} Region{i}": 5000.0 * scale for i in range(5) for side in ("Left", "Right")})
    return vols


def test_no_flags_for_normal_infant_or_adult():
    assert participant_flags(_brain(1.0)) == []
    assert participant_flags(_brain(0.35)) == []  # a 0.5 L infant brain is not "too small"


def test_flags_are_relative():
    infant = _brain(0.35)
    infant["Left Region0"] = 0.0
    infant["Right Region1"] = infant["Left Region1"] * 0.3
    flags = {f["flag"]: f["detail"] for f in participant_flags(infant)}
    assert flags["missing_region"] == "Left Region0"
    assert "Region1" in flags["asymmetry"]
    infant = _brain(0.35)
    infant[BRAIN] = 0.2 * infant[ICV]
    assert [f["flag"] for f in participant_flags(infant)] == ["brain_fraction"]
    assert participant_flags({ICV: 0.0})[0]["flag"] == "empty_mask"


def test_robust_z_and_bands():
    z = robust_z([1.0, 1.1, 0.9, 1.0, 5.0])
    assert abs(z[-1]) > 3.5 and np.all(np.abs(z[:-1]) < 3.5)
    assert robust_z([1.0, 2.0]).tolist() == [0.0, 0.0]
    assert age_band(0.1) == "0-2y" and age_band(70) == "65y+"
    assert bands_for([1.0, None]) == ["all", "all"]


def test_group_qc_marks_outlier_within_band():
    from brainparc.reports.group import qc_table

    rows = []
    for i in range(6):
        v = _brain(1.0)
        v["Left Region0"] *= 1 + 0.01 * i
        rows.append(
            {"participant_id": f"sub-{i}", "session_id": "n/a", "acquisition": "n/a", "run": "n/a", "age": 30.0, **v}
        )
    rows[-1]["Left Region0"] *= 3
    table = pd.DataFrame(rows)
    regions = [c for c in table.columns if c.startswith(("Left ", "Right "))]
    qc, outliers = qc_table(table, regions)
    assert qc.loc[5, "n_outlier_regions"] == 1 and "Left Region0" in qc.loc[5, "outlier_regions"]
    assert outliers["Left Region0"].sum() == 1


def test_mask_label_agreement_tells_tight_from_loose():
    from brainparc.reports.qc import mask_flags, mask_label_agreement

    labels = np.zeros((20, 20, 20), np.int16)
    labels[5:15, 5:15, 5:15] = 7
    same = mask_label_agreement(labels > 0, labels)
    assert same == {"dice": 1.0, "mask_unlabelled": 0.0, "labels_outside": 0.0} and mask_flags(same) == []
    tight = np.zeros(labels.shape, bool)
    tight[5:15, 5:15, 5:10] = True  # half the brain cut away
    got = mask_label_agreement(tight, labels)
    assert got["mask_unlabelled"] == 0.0 and got["labels_outside"] == 1.0 and got["dice"] < 0.7
    loose = np.zeros(labels.shape, bool)
    loose[3:17, 3:17, 3:17] = True  # a shell of non-brain around it
    got = mask_label_agreement(loose, labels)
    assert got["labels_outside"] == 0.0 and 0.6 < got["mask_unlabelled"] < 0.7
    (flag,) = mask_flags(got)
    assert flag["flag"] == "mask_vs_labels" and flag["severity"] == "warning" and "too loose" in flag["detail"]
    assert mask_flags(None) == []
