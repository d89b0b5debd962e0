"""What the console shows: each warning once, progress bars on long steps (off with --quiet or without a terminal),
the thread count actually used in provenance, and the documented outputs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainparc.cli.main import EXIT_OK, main
from tests.bids.skeleton import phantom

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> list[str]:
    import torch

    from brainparc.models import build, save

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    parc, strip = folder / "parc.safetensors", folder / "strip.safetensors"
    save(build("brainparc-tiny"), parc, preset="brainparc-tiny", status="preliminary")
    save(build("autostrip-tiny"), strip, preset="autostrip-tiny", status="preliminary")
    return [str(parc), str(strip)]


def _t1w(tmp_path: Path, zooms=(1.0, 1.0, 1.0)) -> Path:
    path = tmp_path / "t1.nii.gz"
    img = phantom(shape=(48, 52, 44))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([*zooms, 1.0])), path)
    return path


def test_each_warning_once(capsys):
    from brainparc.cli.logs import setup_logging

    setup_logging()
    log = logging.getLogger("brainparc.test")
    for _ in range(3):
        log.warning("the same warning")
    log.warning("another one")
    logging.getLogger("nipype.workflow").error("Traceback (most recent call last): a node failed")
    err = capsys.readouterr().err
    assert err.splitlines() == ["brainparc: warning: the same warning", "brainparc: warning: another one"]


def test_verbose_shows_nipype(capsys):
    from brainparc.cli.logs import setup_logging

    setup_logging(verbose=1)
    logging.getLogger("nipype.workflow").error("a node failed")
    assert "a node failed" in capsys.readouterr().err
    setup_logging()


def test_progress_only_on_a_terminal(monkeypatch):
    import io

    from brainparc.cli.logs import show_progress

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert show_progress(quiet=False) is False  # not a terminal


def test_a_command_inside_another_repeats_no_warning(capsys, monkeypatch, tmp_path):
    # the demo runs the App's levels through main(): its models' warnings were shown three times
    def fake_demo(*args, **kwargs):
        logging.getLogger("brainparc.models").warning("preliminary weights")
        main([str(tmp_path / "bids"), str(tmp_path / "out"), "group"])  # a nested command (fails: no outputs)
        logging.getLogger("brainparc.models").warning("preliminary weights")
        return 0

    monkeypatch.setattr("brainparc.demo.run_demo", fake_demo)
    assert main(["demo", str(tmp_path / "demo")]) == EXIT_OK
    err = capsys.readouterr().err
    assert err.count("preliminary weights") == 1 and "error: bad input: no *_desc-aparcaseg_volumes.tsv" in err
    main([str(tmp_path / "bids"), str(tmp_path / "out"), "group"])  # a new command starts afresh
    logging.getLogger("brainparc.models").warning("preliminary weights")
    assert capsys.readouterr().err.count("preliminary weights") == 1


def _run(tmp_path, tiny_models, *extra, zooms=(1.0, 1.0, 1.0), strip="force"):
    src = _t1w(tmp_path, zooms)
    models = [x for m in tiny_models for x in ("--model", m)]
    args = ["parcellate", str(src), "-o", str(tmp_path / "out"), "--device", "cpu", "--skull-strip", strip]
    return main([*args, *models, *extra]), tmp_path / "out"


def test_parcellate_progress_bars_and_single_warnings(tmp_path, tiny_models, capsys, monkeypatch):
    monkeypatch.setattr("brainparc.cli.logs.show_progress", lambda quiet: not quiet)  # as on a terminal
    code, out = _run(tmp_path, tiny_models, "--omp-nthreads", "1", zooms=(1.0, 1.0, 2.5))
    err = capsys.readouterr().err
    assert code == EXIT_OK
    for bar in ("registration", "skull-strip windows", "parcellation windows"):
        assert re.search(rf"{bar}: 100%\|", err), bar
    assert err.count("thick slices (1x1x2.5 mm)") == 1
    assert err.count("are preliminary weights") == 2  # one per model
    assert "UserWarning" not in err
    assert json.loads((out / "provenance.json").read_text())["nthreads"] == 1


def test_parcellate_quiet(tmp_path, tiny_models, capsys, monkeypatch):
    import torch

    monkeypatch.setattr("brainparc.cli.logs.show_progress", lambda quiet: not quiet)
    code, out = _run(tmp_path, tiny_models, "--quiet", strip="skip")
    err = capsys.readouterr().err
    assert code == EXIT_OK
    assert "windows" not in err and "Stage:" not in err  # no bars, no progress lines
    assert err.count("are preliminary weights") == 2  # warnings stay
    # no thread flag: the count torch actually used, not null
    assert json.loads((out / "provenance.json").read_text())["nthreads"] == torch.get_num_threads()


def test_progress_label_is_not_hashed(tmp_path):
    from brainparc.interfaces.parcellate import Parcellate

    src = _t1w(tmp_path)
    hashes = {
        Parcellate(in_file=str(src), models=["default"], progress=label).inputs.get_hashval()[1]
        for label in ("", "sub-01_T1w")
    }
    assert len(hashes) == 1  # a rerun with or without a terminal reuses the cache


def test_readme_lists_every_parcellate_output():
    from brainparc.pipeline import OUTPUT_FILES

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Single image") : readme.index("### Using the official")]
    for name in OUTPUT_FILES.values():
        assert f"`{name}`" in section, name
