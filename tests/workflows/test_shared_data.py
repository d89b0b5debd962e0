"""End-to-end participant + group on real brains from ``../shared/data`` (2 subjects, one with 2 sessions).

Infant brains (0.8 mm) as sub-01's two sessions, an adult brain (MNE sample, 1 mm MGZ converted to NIfTI) as
sub-02. Tiny random models on a 3 mm model grid keep it to minutes on a CPU; the file list is compared to the
expected list and the derivatives are validated with the deno validator when installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainparc.cli.main import EXIT_OK, main
from tests.conftest import needs_shared_data
from tests.workflows.test_end_to_end import PER_T1W, TOP

SOURCES = {
    "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": "brainparc/sub001_infant_infantile/brain.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz": "brainparc/sub003_infant_adult_like/brain.nii.gz",
    "sub-02/anat/sub-02_T1w.nii.gz": "whole_head/mne_sample/brain.mgz",
}


@needs_shared_data
@pytest.mark.slow
def test_shared_data_participant_and_group(tmp_path, shared_data, tiny_model_paths):
    bids = tmp_path / "bids"
    for rel, src in SOURCES.items():
        img = nib.load(shared_data / src)
        out = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
        out.header.set_xyzt_units("mm")
        (bids / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(out, bids / rel)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "shared", "BIDSVersion": "1.10.0"}))
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t0.5\nsub-02\t30\n")
    (bids / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tage\nses-1\t0.25\nses-2\t1.0\n")
    out = tmp_path / "out"
    args = [str(bids), str(out), "participant", "--model", tiny_model_paths[2], "--skull-strip", "skip"]
    assert main([*args, "--device", "cpu", "--nprocs", "2", "--skip-bids-validation"]) == EXIT_OK
    assert main([str(bids), str(out), "group"]) == EXIT_OK
    produced = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ("/anat/" in str(p) or p.parent == out)
    )
    expected = sorted(
        TOP
        + ["sub-01.html", "sub-02.html"]
        + [f"{rel.rsplit('_T1w', 1)[0]}_{name}" for rel in SOURCES for name in PER_T1W]
    )
    assert produced == expected
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    if Path(exe).exists():
        proc = subprocess.run([exe, str(out), "--json"], capture_output=True, text=True, check=False)
        errors = [i for i in json.loads(proc.stdout)["issues"]["issues"] if i["severity"] == "error"]
        assert errors == []
