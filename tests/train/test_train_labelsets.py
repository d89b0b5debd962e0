"""Label declarations: schema validation, grouping matrices, conversion of label maps into group targets."""

from __future__ import annotations

import numpy as np
import pytest

from brainparc import labels
from brainparc.train.labelsets import (
    IGNORE,
    GroupRegistry,
    LabelDeclaration,
    builtin_declaration,
    builtin_names,
    load_declaration,
)
from tests.conftest import SHARED_DATA, needs_shared_data

TABLE = labels.dk_struct()
FS = {lab.abbreviation: lab.freesurfer_id for lab in TABLE}
IDX = {lab.abbreviation: lab.index for lab in TABLE}


def test_builtins_load_and_are_complete():
    assert set(builtin_names()) >= {"full", "dkt31_aseg", "aseg", "tissue_only"}
    reg = GroupRegistry()
    for name in builtin_names():
        reg.compile(builtin_declaration(name))
    G = reg.grouping
    assert G.shape == (len(reg), 107)
    np.testing.assert_array_equal(G[:107], np.eye(107, dtype=np.float32))
    assert reg.tissue_grouping.shape[1] == 4


def test_full_targets_are_the_indices():
    reg = GroupRegistry()
    comp = reg.compile(builtin_declaration("full"))
    lab = np.arange(107).reshape(107, 1, 1).astype(np.float32)
    np.testing.assert_array_equal(comp.to_targets(lab).ravel(), np.arange(107))
    with pytest.raises(ValueError, match="undeclared"):
        comp.to_targets(np.array([[[200]]]))


def test_dkt31_merges_and_ignores():
    reg = GroupRegistry()
    comp = reg.compile(builtin_declaration("dkt31_aseg"))
    vals = [FS["Temporal_Sup_L"], FS["Temporal_Sup_Banks_L"], FS["Frontal_Sup_R"], 1033, 6, 45, 91, 630, 17, 0]
    t = comp.to_targets(np.array(vals).reshape(-1, 1, 1), brain_mask=np.zeros((len(vals), 1, 1))).ravel()
    groups = [reg.groups[g] if g >= 0 else None for g in t]
    assert groups[0] == groups[1] == {IDX["Temporal_Sup_L"], IDX["Temporal_Sup_Banks_L"]}
    assert groups[2] == {IDX["Frontal_Sup_R"], IDX["Frontalpole_R"]}
    assert groups[3] == {IDX["Temporal_Inf_L"], IDX["Temporalpole_L"]}
    assert groups[4] == {IDX["Cerebellum_Cortex_L"]} and groups[5] == {IDX["Cerebellum_Cortex_R"]}
    assert t[6] == IGNORE and t[7] == IGNORE
    assert groups[8] == {IDX["Hippocampus_L"]}
    assert t[9] == 0  # outside the brain: background


def test_dkt31_unlabelled_brain_is_white_matter_not_background():
    """DKT31+aseg has no WM label: 0 inside the brain is the group "cerebral WM or corpus callosum" (never ignored:
    ignoring it let the network call adult white matter cortex), 0 outside it background."""
    reg = GroupRegistry()
    comp = reg.compile(builtin_declaration("dkt31_aseg"))
    lab = np.zeros((4, 1, 1))
    lab[0] = FS["Precentral_L"]
    brain = np.array([1, 1, 0, 0]).reshape(4, 1, 1)
    t = comp.to_targets(lab, brain).ravel()
    assert t[0] == IDX["Precentral_L"] and t[2] == t[3] == 0
    wm = {IDX[n] for n in ("Cerebral_WM_L", "Cerebral_WM_R", "CC_Anterior", "CC_Mid_Anterior", "CC_Central",
                           "CC_Mid_Posterior", "CC_Posterior")}  # fmt: skip
    assert reg.groups[t[1]] == wm and reg.tissue_of_group[t[1]] == 3


def test_aseg_cortex_is_union_of_parcels_and_tissue_projection():
    reg = GroupRegistry()
    comp = reg.compile(builtin_declaration("aseg"))
    t = comp.to_targets(np.array([3, 42, 2, 24, 165, 0, 25]).reshape(-1, 1, 1)).ravel()
    assert len(reg.groups[t[0]]) == 34 and all(TABLE[c].freesurfer_id // 1000 == 1 for c in reg.groups[t[0]])
    assert len(reg.groups[t[1]]) == 34 and all(TABLE[c].freesurfer_id // 1000 == 2 for c in reg.groups[t[1]])
    assert IDX["Cerebral_WM_L"] in reg.groups[t[2]] and IDX["CC_Central"] in reg.groups[t[2]]
    assert reg.groups[t[3]] == {IDX["CSF"]}
    assert t[4] == 0 and t[5] == 0  # extra-cerebral (e.g. skull) and background
    assert t[6] == IGNORE  # lesion
    tissue = reg.tissue_targets(t)
    assert tissue.tolist() == [2, 2, 3, 1, 0, 0, IGNORE]


def test_tissue_only():
    reg = GroupRegistry()
    comp = reg.compile(builtin_declaration("tissue_only"))
    t = comp.to_targets(np.array([0, 1, 2, 3]).reshape(-1, 1, 1)).ravel()
    assert t[0] == 0
    gm = reg.groups[t[2]]
    assert IDX["Precentral_L"] in gm and IDX["Thalamus_L"] in gm and IDX["Cerebral_WM_L"] not in gm
    assert reg.tissue_targets(t).tolist() == [0, 1, 2, 3]


def test_schema_validation():
    base = {"name": "x", "label_space": "brainparc"}
    load_declaration(base)
    with pytest.raises(ValueError, match="neither labelled nor declared missing"):
        load_declaration(base | {"ignore_ids": [5]})
    assert 5 in load_declaration(base | {"ignore_ids": [5], "missing": [5]}).missing
    # a default mapping onto a missing class is dropped (value 5 then is undeclared) ...
    assert 5 not in load_declaration(base | {"missing": [5]}).source_groups()
    # ... but an explicit group cannot contain a missing class
    with pytest.raises(ValueError, match="declared missing but reachable"):
        load_declaration(base | {"groups": {"6": [5, 6]}, "missing": [5]})
    with pytest.raises(ValueError, match="unknown keys"):
        load_declaration(base | {"grups": {}})
    with pytest.raises(ValueError, match="label_space"):
        LabelDeclaration(name="y", label_space="mni")
    d = load_declaration(base | {"groups": {"5": ["Paracentral_L", 7]}, "missing": []})
    assert d.groups[5] == {5, 7}


@needs_shared_data
def test_mindboggle_atlas_targets():
    import nibabel as nib

    atlas = SHARED_DATA / "mindboggle" / "atlas_1"
    lab = np.asarray(nib.load(atlas / "atlas_1_labels.nii.gz").dataobj)
    brain = np.asarray(nib.load(atlas / "t1weighted_brain.nii.gz").dataobj) > 0
    reg = GroupRegistry()
    comp = reg.compile(load_declaration("dkt31_aseg"))
    t = comp.to_targets(lab, brain)
    unlabelled_brain = (np.rint(lab) == 0) & brain
    assert unlabelled_brain.sum() > 100_000  # cerebral WM etc. (no WM label in DKT31+aseg)
    assert len(np.unique(t[unlabelled_brain])) == 1  # one group: white matter or corpus callosum, never background
    assert IDX["Cerebral_WM_L"] in reg.groups[t[unlabelled_brain][0]]
    assert np.all(t[~brain & (np.rint(lab) == 0)] == 0)
    merged = reg.groups[t[np.rint(lab) == FS["Temporal_Sup_L"]][0]]
    assert merged == {IDX["Temporal_Sup_L"], IDX["Temporal_Sup_Banks_L"]}
    present = {c for g in np.unique(t[t >= 0]) for c in reg.groups[g]}
    assert IDX["Cerebellum_Cortex_L"] in present
    # tissue targets: the unlabelled brain is WM
    tissue = reg.tissue_targets(t)
    assert np.all(tissue[unlabelled_brain] == 3)
    assert np.all(tissue[np.rint(lab) == FS["Precentral_L"]] == 2)
