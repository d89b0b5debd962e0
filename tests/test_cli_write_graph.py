"""``--write-graph``: SVG with graphviz; without ``dot`` one warning line, the ``.dot`` file, and the run goes on."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from brainparc.bids.layout import T1wInput
from brainparc.cli.run import write_graph
from brainparc.workflows.base import init_brainparc_wf


def _wf(tmp_path: Path):
    t1w = T1wInput(Path("/d/sub-01/anat/sub-01_T1w.nii.gz"), "01", {}, None)
    return init_brainparc_wf([t1w], Path("/d"), tmp_path / "out", tmp_path / "work", ["default"])


def _no_dot(monkeypatch, tmp_path: Path) -> None:
    """PATH with an empty folder only: no graphviz, whatever this machine has."""
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_without_dot_one_warning_and_the_dot_file(tmp_path, monkeypatch, caplog):
    _no_dot(monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO, logger="brainparc"):
        path = write_graph(_wf(tmp_path))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("brainparc")]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "graphviz 'dot' not found" in warnings[0].getMessage()
    assert path == tmp_path / "work" / "brainparc_wf" / "graph.dot" and path.is_file()
    assert "single_t1w_sub_01_wf" in path.read_text()


def test_with_dot_an_svg(tmp_path, monkeypatch, caplog):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"  # stands in for graphviz: writes the -o file nipype asks for
    fake.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in -o*) echo "<svg/>" > "${a#-o}";; esac; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin")
    with caplog.at_level(logging.WARNING, logger="brainparc"):
        path = write_graph(_wf(tmp_path))
    assert path == tmp_path / "work" / "brainparc_wf" / "graph.svg" and path.read_text().strip() == "<svg/>"
    assert not [r for r in caplog.records if r.name.startswith("brainparc")]


def test_a_failing_dot_is_one_warning(tmp_path, monkeypatch, caplog):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text("#!/bin/sh\necho 'dot: broken' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin")
    with caplog.at_level(logging.WARNING, logger="brainparc"):
        path = write_graph(_wf(tmp_path))
    warnings = [r for r in caplog.records if r.name.startswith("brainparc")]
    assert path is None and len(warnings) == 1 and "continuing without it" in warnings[0].getMessage()
    assert (tmp_path / "work" / "brainparc_wf" / "graph.dot").is_file()


def test_flag_reaches_the_config():
    from brainparc.cli.parser import get_parser
    from brainparc.cli.run import build_config

    args = get_parser().parse_args(["/nonexistent/bids", "/tmp/out", "participant", "--write-graph"])
    assert build_config(args).execution.write_graph is True
