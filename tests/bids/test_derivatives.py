"""The output contract: a table of ``(source, entities) -> path`` cases, dtypes, sidecars, dataset-level files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from brainparc.bids.derivatives import (
    BIDSIGNORE,
    OUTPUTS,
    cast_image,
    container_from_env,
    dataset_description,
    derivative_path,
    dseg_tables,
    init_derivatives,
    write_derivative,
)

CASES = [
    ("sub-01/anat/sub-01_T1w.nii.gz", "preproc", "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"),
    ("sub-01/anat/sub-01_T1w.nii", "mask", "sub-01/anat/sub-01_desc-brain_mask.nii.gz"),
    ("sub-01/ses-A/anat/sub-01_ses-A_T1w.nii.gz", "tissue", "sub-01/ses-A/anat/sub-01_ses-A_desc-tissue_dseg.nii.gz"),
    (
        "sub-01/ses-1/anat/sub-01_ses-1_acq-mp2rage_run-02_T1w.nii.gz",
        "aparcaseg",
        "sub-01/ses-1/anat/sub-01_ses-1_acq-mp2rage_run-02_desc-aparcaseg_dseg.nii.gz",
    ),
    ("sub-02/anat/sub-02_run-1_T1w.nii.gz", "probseg_GM", "sub-02/anat/sub-02_run-1_label-GM_probseg.nii.gz"),
    (
        "sub-02/anat/sub-02_ce-gad_rec-norm_T1w.nii.gz",
        "probseg_CSF",
        "sub-02/anat/sub-02_ce-gad_rec-norm_label-CSF_probseg.nii.gz",
    ),
    ("sub-03/anat/sub-03_T1w.nii.gz", "volumes", "sub-03/anat/sub-03_desc-aparcaseg_volumes.tsv"),
]


@pytest.mark.parametrize(("source", "key", "expected"), CASES)
def test_names(source, key, expected):
    spec = {k: v for k, v in OUTPUTS[key].items() if k != "dtype"}
    assert str(derivative_path("/data/" + source, **spec)) == expected
    assert "space-" not in expected


def test_not_bids_name_refused():
    with pytest.raises(ValueError, match="not a BIDS file name"):
        derivative_path("/x/brain.nii.gz", desc="brain", suffix="mask")


@pytest.mark.parametrize(("key", "dtype"), [("mask", np.uint8), ("tissue", np.int16), ("probseg_WM", np.float32)])
def test_write_derivative_casts_and_writes_sidecar(tmp_path, key, dtype):
    data = np.random.default_rng(0).random((4, 5, 6)) * 2
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), src)
    files = write_derivative(src, "/raw/sub-01/anat/sub-01_T1w.nii.gz", tmp_path / "out", key, {"Type": "Brain"})
    img = nib.load(files[0])
    assert img.get_data_dtype() == dtype and np.asarray(img.dataobj).dtype == dtype
    assert json.loads(files[1].read_text()) == {"Type": "Brain"}
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left


def test_cast_rounds_integers():
    img = cast_image(nib.Nifti1Image(np.array([[[0.6, 1.4]]]), np.eye(4)), "int16")
    assert np.asarray(img.dataobj).tolist() == [[[1, 1]]]


def test_dataset_description(tmp_path, monkeypatch):
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x", "DatasetDOI": "10.1/abc"}))
    desc = dataset_description(tmp_path, container_from_env({"BRAINPARC_CONTAINER": "docker"}))
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "brainparc" and desc["GeneratedBy"][0]["Container"] == {"Type": "docker"}
    assert {"CodeURL", "Version"} <= set(desc["GeneratedBy"][0])
    assert desc["SourceDatasets"][0]["DOI"] == "10.1/abc"
    assert "raw" in desc["DatasetLinks"]
    assert container_from_env({}) is None


def test_dseg_tables():
    tables = dseg_tables()
    aparc = tables["desc-aparcaseg_dseg.tsv"].splitlines()
    assert aparc[0].split("\t") == ["index", "name", "abbreviation", "color", "mapping"]
    assert len(aparc) == 1 + 106
    ids = [int(line.split("\t")[0]) for line in aparc[1:]]
    assert len(set(ids)) == 106 and 17 in ids  # FreeSurfer ids (Left-Hippocampus)
    tissue = tables["desc-tissue_dseg.tsv"].splitlines()
    assert [ln.split("\t")[2] for ln in tissue[1:]] == ["CSF", "GM", "WM"]


def test_init_derivatives_idempotent(tmp_path):
    init_derivatives(tmp_path / "out", tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    init_derivatives(tmp_path / "out", tmp_path)
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert before == after
    assert set(before) == {"dataset_description.json", "desc-aparcaseg_dseg.tsv", "desc-tissue_dseg.tsv", ".bidsignore"}
    assert all(pat in before[".bidsignore"].decode() for pat in BIDSIGNORE)
