"""Participant + group on a small BIDS dataset (tiny phantoms, tiny random models), read-only input.

sub-01 has two sessions, sub-02 one run; sub-03 (corrupt NIfTI), sub-04 (4-D, 3 volumes) and sub-05 (no T1w) fail
with one-line messages while the others complete, and the exit code is 1. A rerun with the same work dir resumes
from the cache and rewrites byte-identical outputs. The derivatives pass the deno BIDS validator when installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainparc.cli.main import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_MODEL, EXIT_OK, main
from tests.bids.skeleton import make_bids, phantom

GOOD = [
    "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
    "sub-02/anat/sub-02_run-01_T1w.nii.gz",
]
PER_T1W = [
    "desc-aparcaseg_dseg.json",
    "desc-aparcaseg_dseg.nii.gz",
    "desc-aparcaseg_volumes.json",
    "desc-aparcaseg_volumes.tsv",
    "desc-brain_mask.json",
    "desc-brain_mask.nii.gz",
    "desc-preproc_T1w.json",
    "desc-preproc_T1w.nii.gz",
    "desc-tissue_dseg.json",
    "desc-tissue_dseg.nii.gz",
    "label-CSF_probseg.json",
    "label-CSF_probseg.nii.gz",
    "label-GM_probseg.json",
    "label-GM_probseg.nii.gz",
    "label-WM_probseg.json",
    "label-WM_probseg.nii.gz",
]
TOP = [".bidsignore", "dataset_description.json", "desc-aparcaseg_dseg.tsv", "desc-tissue_dseg.tsv"]


def expected_files() -> list[str]:
    files = [f"{src.rsplit('_T1w', 1)[0]}_{name}".replace("/anat/", "/anat/") for src in GOOD for name in PER_T1W]
    return sorted(TOP + files)


def _dataset(root: Path) -> Path:
    bids = make_bids(root, GOOD, ages={"sub-01": 0.5, "sub-02": 35}, session_ages={"sub-01": {"1": 0.5, "2": 1.5}})
    corrupt = bids / "sub-03/anat/sub-03_T1w.nii.gz"
    corrupt.parent.mkdir(parents=True)
    nib.save(phantom(), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # truncated gzip
    four_d = bids / "sub-04/anat/sub-04_T1w.nii.gz"
    four_d.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.stack([np.asarray(phantom().dataobj)] * 3, -1), np.eye(4)), four_d)
    t2 = bids / "sub-05/anat/sub-05_T2w.nii.gz"
    t2.parent.mkdir(parents=True)
    nib.save(phantom(), t2)
    with open(bids / "participants.tsv", "a") as fh:
        fh.write("sub-03\tn/a\nsub-04\tn/a\nsub-05\tn/a\n")
    for path in sorted(bids.rglob("*"), reverse=True):  # read-only input
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    bids.chmod(0o555)
    return bids


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "/anat/" in str(p)
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_paths):
    root = tmp_path_factory.mktemp("e2e")
    bids = _dataset(root / "bids")
    out = root / "out"
    args = [str(bids), str(out), "participant", "--model", tiny_model_paths[0], "--skull-strip", "skip"]
    args += ["--device", "cpu", "--nprocs", "2", "--omp-nthreads", "1", "--skip-bids-validation", "--write-graph"]
    code = main(args)
    yield {"root": root, "bids": bids, "out": out, "code": code, "args": args}
    for path in [bids, *bids.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


def test_participant_outputs(run, capsys):
    assert run["code"] == EXIT_FAILED  # sub-03/04/05 failed, the others completed
    produced = sorted(
        str(p.relative_to(run["out"]))
        for p in run["out"].rglob("*")
        if p.is_file() and ("/anat/" in str(p) or p.parent == run["out"]) and not p.name.endswith(".html")
    )
    assert produced == expected_files()
    assert not (run["root"] / "bids" / "derivatives").exists()
    assert (run["root"] / "brainparc_work").is_dir()  # default work dir: next to OUTPUT_DIR
    graph = run["root"] / "brainparc_work" / "brainparc_wf"
    assert (graph / "graph.svg").is_file() or (graph / "graph.dot").is_file()  # --write-graph, with or without dot


def test_failures_logged(run):
    crashes = list((run["out"] / "logs").glob("crash-*.txt"))
    texts = "\n".join(p.read_text() for p in crashes)
    assert "sub_03" in texts and "sub_04" in texts
    assert "InputError" in texts and "expected a 3-D T1w image" in texts
    html = (run["out"] / "sub-04.html").read_text()
    assert "expected a 3-D T1w image" in html
    assert "no T1w image found" in (run["out"] / "sub-05.html").read_text()
    # one line per failure, in OUTPUT_DIR/logs, saying what is wrong with which file
    (summary,) = (run["out"] / "logs").glob("failures-*.txt")
    lines = {ln.split()[2]: ln for ln in summary.read_text().splitlines()}
    assert sorted(lines) == ["sub-03", "sub-04", "sub-05"]
    assert all(ln.startswith("brainparc: FAILED") for ln in lines.values())
    assert "sub-03_T1w.nii.gz" in lines["sub-03"] and "cannot read" in lines["sub-03"]
    assert "sub-04_T1w.nii.gz" in lines["sub-04"] and "expected a 3-D T1w image" in lines["sub-04"]
    assert "no T1w image found" in lines["sub-05"]


def test_sidecars_and_dtypes(run):
    anat = run["out"] / "sub-01" / "ses-1" / "anat"
    pre = json.loads((anat / "sub-01_ses-1_desc-preproc_T1w.json").read_text())
    assert pre["SkullStripped"] is False and pre["Sources"] == ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"]
    assert json.loads((anat / "sub-01_ses-1_desc-brain_mask.json").read_text())["Type"] == "Brain"
    parc = json.loads((anat / "sub-01_ses-1_desc-aparcaseg_dseg.json").read_text())
    assert parc["ModelName"] == "brainparc-tiny" and len(parc["ModelSHA256"]) == 64 and parc["Device"] == "cpu"
    assert json.loads((anat / "sub-01_ses-1_desc-aparcaseg_volumes.json").read_text())["age"] == 0.5
    dtypes = {"mask": np.uint8, "dseg": np.int16, "probseg": np.float32}
    src = nib.load(run["bids"] / GOOD[0])
    for path in anat.glob("*.nii.gz"):
        img = nib.load(path)
        assert img.shape == src.shape and np.allclose(img.affine, src.affine)
        suffix = path.name.split("_")[-1].split(".")[0]
        if suffix in dtypes:
            assert img.get_data_dtype() == dtypes[suffix], path.name
    vols = (anat / "sub-01_ses-1_desc-aparcaseg_volumes.tsv").read_text()
    assert "Total intracranial (brain mask)" in vols and "Brain (GM+WM)" in vols


def test_group_level(run):
    assert main([str(run["bids"]), str(run["out"]), "group"]) == EXIT_OK
    group = run["out"] / "group"
    vols = (group / "volumes.tsv").read_text().splitlines()
    assert len(vols) == 1 + len(GOOD)
    header = vols[0].split("\t")
    assert header[:5] == ["participant_id", "session_id", "acquisition", "run", "age"]
    assert "Left Hippocampus" in header and "Total intracranial (brain mask)" in header
    assert (group / "qc.tsv").is_file() and (group / "figures" / "volumes_vs_age.png").is_file()
    report = (group / "report.html").read_text()
    assert "../sub-01.html" in report and "../sub-02.html" in report


def test_resume_is_identical(run, capsys):
    before = _digest(run["out"])
    work = run["root"] / "brainparc_work" / "brainparc_wf"
    results = sorted(work.glob("single_t1w_sub_0[12]*_wf/parcellate/result_parcellate.pklz"))
    assert len(results) == len(GOOD)
    stamps = [p.stat().st_mtime_ns for p in results]
    args = [*run["args"], "--participant-label", "01", "02"]
    assert main(args) == EXIT_OK
    assert _digest(run["out"]) == before
    assert [p.stat().st_mtime_ns for p in results] == stamps  # parcellation came from the cache


def test_bids_validator(run):
    exe = shutil.which("bids-validator-deno") or (Path(os.sys.executable).parent / "bids-validator-deno")
    if not Path(exe).exists():
        pytest.skip("bids-validator-deno not installed")
    proc = subprocess.run([str(exe), str(run["out"]), "--json"], capture_output=True, text=True, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == []


def test_bad_usage_exit_codes(run, tiny_model_paths, tmp_path, capsys, no_bundled_weights):
    bids, out = str(run["bids"]), str(tmp_path / "o")
    model = ["--model", tiny_model_paths[0], "--skip-bids-validation"]
    (tmp_path / "notbids").mkdir()
    assert main([str(tmp_path / "notbids"), out, "participant", *model]) == EXIT_BAD_INPUT  # not a BIDS dir
    assert main([bids, out, "participant", "--participant-label", "sub-99", *model]) == EXIT_BAD_INPUT
    assert main([bids, out, "participant", "--participant-label", "05", *model]) == EXIT_BAD_INPUT  # no T1w at all
    assert main([bids, out, "participant", "--skip-bids-validation"]) == EXIT_MODEL  # no bundled weights
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("brainparc: error: ") for line in err)
    assert "sub-99" not in err[1] or "99 not found" in err[1]
    assert not Path(out).exists() or not any(Path(out).rglob("*.nii.gz"))


def test_reports_only(run):
    report = run["out"] / "sub-02.html"
    report.unlink()
    assert main([*run["args"], "--participant-label", "02", "--reports-only"]) == EXIT_OK
    assert "sub-02_run-01" in report.read_text()
