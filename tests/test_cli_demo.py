"""``brainparc demo``: without the bundled weights it stops with exit 4 and builds nothing; with weights it runs."""

from __future__ import annotations

import nibabel as nib
import pytest

from brainparc.cli.main import EXIT_MODEL, EXIT_OK, main
from tests.workflows.conftest import tiny_model_paths  # noqa: F401  (fixture)


def test_demo_without_weights_is_a_clear_model_error(tmp_path, capsys, no_bundled_weights):
    assert main(["demo", str(tmp_path / "demo")]) == EXIT_MODEL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("brainparc: error: model error:")
    assert not (tmp_path / "demo").exists()


def test_demo_dataset_is_valid_bids(tmp_path):
    from brainparc.bids.layout import collect_t1w, load_layout
    from brainparc.demo import build_demo_dataset

    bids = build_demo_dataset(tmp_path / "bids", resolution=3.0)
    inputs, empty = collect_t1w(load_layout(bids))
    assert empty == [] and len(inputs) == 3
    assert {t.age for t in inputs} == {30.0, 31.5, 45.0}
    shapes = {t.path.name: nib.load(t.path).shape for t in inputs}
    assert shapes["sub-01_ses-1_T1w.nii.gz"] == shapes["sub-01_ses-2_T1w.nii.gz"]


@pytest.mark.slow
def test_demo_runs_with_tiny_models(tmp_path, tiny_model_paths, capsys):  # noqa: F811
    # 3 mm model grid: a few windows per image on a CPU
    code = main(["demo", str(tmp_path / "demo"), "--model", tiny_model_paths[2], "--device", "cpu", "--nprocs", "2"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "group/report.html" in out and "sub-01.html" in out
    assert (tmp_path / "demo" / "derivatives" / "group" / "volumes.tsv").is_file()


def test_demo_prints_one_line_per_stage(tmp_path, capsys, monkeypatch):
    import brainparc.cli.main as cli_main
    from brainparc import demo

    calls = []
    monkeypatch.setattr("brainparc.pipeline.load_models", lambda specs: None)
    monkeypatch.setattr(cli_main, "main", lambda argv: calls.append(argv) or 0)
    assert demo.run_demo(tmp_path / "d", resolution=3.0, verbosity=["--quiet"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["building", "participant", "group", "report"]
    assert "(3 T1w images;" in lines[1] and lines[-1].endswith("group/report.html (missing)")
    assert [argv[2] for argv in calls] == ["participant", "group"] and all("--quiet" in argv for argv in calls)


def test_demo_script_installs_quietly():
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "scripts" / "demo.sh").read_text()
    install = next(line for line in script.splitlines() if "pip install" in line)
    assert " -q " in install
    assert '} > "$LOG" 2>&1' in script  # venv creation and pip: into the log, shown only on failure
    assert script.count("echo ") == 2  # one stage line here, one on failure; the rest is `brainparc demo`'s
