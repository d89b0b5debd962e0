"""Kill a participant run mid-way (SIGKILL to the whole process group), rerun with the same work dir: it resumes
and the outputs equal those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.bids.skeleton import make_bids

FILES = ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz"]
REPO = Path(__file__).resolve().parents[2]


def _cmd(bids: Path, out: Path, work: Path, model: str) -> list[str]:
    return [sys.executable, "-m", "brainparc", str(bids), str(out), "participant", "-w", str(work), "--model", model,
            "--skull-strip", "skip", "--device", "cpu", "--nprocs", "1", "--omp-nthreads", "1",
            "--skip-bids-validation"]  # fmt: skip


def _arrays(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.asarray(nib.load(p).dataobj) for p in sorted(out.rglob("*.nii.gz"))}


@pytest.mark.slow
def test_kill_then_resume(tmp_path, tiny_model_paths):
    bids = make_bids(tmp_path / "bids", FILES)
    env = {**os.environ, "NIPYPE_NO_ET": "1", "PYTHONPATH": str(REPO)}
    work = tmp_path / "work"
    proc = subprocess.Popen(_cmd(bids, tmp_path / "out", work, tiny_model_paths[0]), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not list(work.rglob("result_parcellate.pklz")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in work.rglob("result_parcellate.pklz")}
    assert 1 <= len(finished) < len(FILES), "the kill should land mid-run"
    rerun = subprocess.run(_cmd(bids, tmp_path / "out", work, tiny_model_paths[0]), env=env, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # Resumed, not recomputed: the parcellations finished before the kill keep their result files untouched (nipype
    # logs cache hits only at debug level under MultiProc, so the files are the evidence, not the log).
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert len(list(work.rglob("result_parcellate.pklz"))) == len(FILES)
    fresh = subprocess.run(_cmd(bids, tmp_path / "fresh", tmp_path / "work2", tiny_model_paths[0]), env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert fresh.returncode == 0
    resumed, reference = _arrays(tmp_path / "out"), _arrays(tmp_path / "fresh")
    assert resumed.keys() == reference.keys() and len(resumed) == 7 * len(FILES)
    for name, arr in resumed.items():
        assert arr.dtype == reference[name].dtype
        np.testing.assert_allclose(arr, reference[name], rtol=0, atol=1e-5, err_msg=name)
