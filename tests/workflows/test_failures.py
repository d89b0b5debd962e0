"""Failure handling of the participant level: ``--stop-on-first-crash`` stops the run; without it the others finish.

sub-01's T1w is a truncated gzip (it fails in the first node, ``bias_correct``); sub-02 and sub-03 are good phantoms.
Both nipype schedulers used here run every ``bias_correct`` before any parcellation (Linear: topological order;
MultiProc with one process: the ready job with the lowest index first), so with the flag neither good image gets
parcellated and the outcome does not depend on timing.
"""

from __future__ import annotations

import pytest

from brainparc.cli.main import EXIT_FAILED, main
from tests.bids.skeleton import make_bids, phantom

GOOD = ["sub-02/anat/sub-02_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz"]


def _dataset(root):
    import nibabel as nib

    bids = make_bids(root, GOOD)
    corrupt = bids / "sub-01/anat/sub-01_T1w.nii.gz"
    corrupt.parent.mkdir(parents=True)
    nib.save(phantom(), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # truncated gzip
    with open(bids / "participants.tsv", "a") as fh:
        fh.write("sub-01\tn/a\n")
    return bids


def _aparcaseg(out):
    return sorted(p.name for p in out.rglob("*_desc-aparcaseg_dseg.nii.gz"))


def _run(tmp_path, model, *extra):
    bids, out = _dataset(tmp_path / "bids"), tmp_path / "out"
    args = [str(bids), str(out), "participant", "--model", model, "--skull-strip", "skip", "--device", "cpu"]
    return main([*args, "--omp-nthreads", "1", "--skip-bids-validation", *extra]), out


def _summary_lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith(("brainparc: FAILED", "brainparc: NOT RUN"))]


@pytest.mark.parametrize("plugin", [["--plugin", "Linear"], ["--plugin", "MultiProc", "--nprocs", "1"]])
def test_stop_on_first_crash(tmp_path, tiny_model_paths, capsys, plugin):
    code, out = _run(tmp_path, tiny_model_paths[0], *plugin, "--stop-on-first-crash")
    stdout = capsys.readouterr().out
    assert code == EXIT_FAILED
    assert _aparcaseg(out) == []  # stopped: no participant was parcellated
    lines = _summary_lines(stdout)
    assert len(lines) == 3, stdout
    assert lines[0].startswith("brainparc: FAILED sub-01 sub-01_T1w.nii.gz: ") and "crash file:" in lines[0]
    assert sorted(lines[1:]) == [
        f"brainparc: NOT RUN sub-{s} sub-{s}_T1w.nii.gz: not processed: the run stopped at the first crash "
        "(--stop-on-first-crash)"
        for s in ("02", "03")
    ]
    # the same one line per failure in OUTPUT_DIR/logs, next to the text crash file
    (summary,) = (out / "logs").glob("failures-*.txt")
    assert summary.read_text().splitlines() == lines
    assert len(list((out / "logs").glob("crash-*.txt"))) == 1
    assert "stopped at the first crash" in (out / "sub-02.html").read_text()


def test_without_the_flag_the_others_complete(tmp_path, tiny_model_paths, capsys):
    code, out = _run(tmp_path, tiny_model_paths[0], "--plugin", "Linear")
    stdout = capsys.readouterr().out
    assert code == EXIT_FAILED
    assert _aparcaseg(out) == ["sub-02_desc-aparcaseg_dseg.nii.gz", "sub-03_desc-aparcaseg_dseg.nii.gz"]
    lines = _summary_lines(stdout)
    assert len(lines) == 1 and lines[0].startswith("brainparc: FAILED sub-01 ") and "InputError" in lines[0]
    (summary,) = (out / "logs").glob("failures-*.txt")
    assert summary.read_text().splitlines() == lines
    assert "Errors</h2><p>none</p>" in (out / "sub-02.html").read_text()


@pytest.mark.parametrize(
    ("plugin", "graph"),
    [("MultiProc", False), ("Linear", False), ("SLURM", False), ("SLURMGraph", True), ("SGEGraph", True)],
)
def test_graph_plugins_get_no_status_callback(plugin, graph):
    # graph plugins submit everything and return (nipype warns on a status_callback): no completion check there
    from brainparc.cli.run import _is_graph_plugin

    assert _is_graph_plugin(plugin) is graph


def test_console_gets_one_line_per_broken_image(tmp_path, tiny_model_paths, capfd):
    """Truncated, 4-D, all-zero and NaN images: one FAILED line each on the console, no nipype traceback there (the
    tracebacks are in the crash files and the log file); the good, thick-sliced image completes, warned about once."""
    import nibabel as nib
    import numpy as np

    bids = make_bids(tmp_path / "bids", [f"sub-0{i}/anat/sub-0{i}_T1w.nii.gz" for i in range(1, 6)])
    good = phantom()
    data = np.asarray(good.dataobj)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.5, 1.0])), bids / "sub-01/anat/sub-01_T1w.nii.gz")
    truncated = bids / "sub-02/anat/sub-02_T1w.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:300])
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), good.affine), bids / "sub-03/anat/sub-03_T1w.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros_like(data), good.affine), bids / "sub-04/anat/sub-04_T1w.nii.gz")
    nan = data.copy()
    nan[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, good.affine), bids / "sub-05/anat/sub-05_T1w.nii.gz")
    out = tmp_path / "out"
    args = [str(bids), str(out), "participant", "--model", tiny_model_paths[0], "--skull-strip", "skip"]
    code = main([*args, "--device", "cpu", "--nprocs", "2", "--omp-nthreads", "1", "--skip-bids-validation"])
    captured = capfd.readouterr()  # file-descriptor level: the worker processes' output too
    console = captured.out + captured.err
    assert code == EXIT_FAILED
    failed = _summary_lines(captured.out)
    assert [line.split()[2] for line in failed] == ["sub-02", "sub-03", "sub-04", "sub-05"], console
    for word in ("Traceback", "NodeExecutionError", "[Node]", "could not run node", "Saving crash info"):
        assert word not in console, word
    assert console.count("thick slices (1x1x2.5 mm)") == 1
    assert _aparcaseg(out) == ["sub-01_desc-aparcaseg_dseg.nii.gz"]
    (log,) = (out / "logs").glob("brainparc-*.log")
    text = log.read_text()
    assert "NodeExecutionError" in text and "Traceback" in text and "[Node] Finished" in text
