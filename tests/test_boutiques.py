"""The Boutiques descriptor (descriptors/brainparc.boutiques.json): valid for bosh, in step with the parser."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from brainparc import __version__
from brainparc.cli.parser import get_parser

DESCRIPTOR = Path(__file__).resolve().parents[1] / "descriptors" / "brainparc.boutiques.json"
SKIPPED = {"help", "version"}


def _descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text())


def _actions() -> list[argparse.Action]:
    return [a for a in get_parser()._actions if a.dest not in SKIPPED]


def test_every_parser_option_is_described():
    inputs = _descriptor()["inputs"]
    by_flag = {i["command-line-flag"]: i for i in inputs if "command-line-flag" in i}
    by_id = {i["id"]: i for i in inputs}
    for action in _actions():
        if action.option_strings:
            matches = [by_flag[f] for f in action.option_strings if f in by_flag]
            assert len(matches) == 1, f"{action.option_strings} is not in the descriptor exactly once"
            described = matches[0]
        else:
            described = by_id[action.dest]
        assert described["id"] == action.dest
        assert described.get("value-choices") == (list(action.choices) if action.choices else None), action.dest
        assert described.get("optional", False) == bool(action.option_strings), action.dest
        assert (described["type"] == "Flag") == (action.nargs == 0), action.dest
    assert len(inputs) == len(_actions())


def test_versions_match_the_package():
    desc = _descriptor()
    assert desc["tool-version"] == __version__
    assert desc["container-image"]["image"] == f"brainparc:{__version__}"  # the Dockerfile's default IMAGE_TAG


def test_bosh_validates_and_simulates_a_parsable_command(tmp_path):
    pytest.importorskip("boutiques", reason="boutiques (bosh) is not installed")
    from boutiques.bosh import bosh

    bosh(["validate", str(DESCRIPTOR)])  # raises on an invalid descriptor
    invocation = {
        "bids_dir": "/data",
        "output_dir": "/out",
        "analysis_level": "participant",
        "participant_label": ["01", "02"],
        "model": ["/m/parc.safetensors", "/m/strip.safetensors"],
        "skull_strip": "force",
        "nprocs": 2,
        "plugin": "SLURMGraph",
        "plugin_args": '{"dont_resubmit_completed_jobs": true}',
        "skip_bids_validation": True,
        "verbose": True,
    }
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    command = bosh(["exec", "simulate", str(DESCRIPTOR), "-i", str(path)]).shell_command
    argv = shlex.split(command)
    assert argv[0] == "brainparc"
    args = get_parser().parse_args(argv[1:])
    assert args.participant_label == ["01", "02"]
    assert args.model == ["/m/parc.safetensors", "/m/strip.safetensors"]  # --model repeated, not a list after one flag
    assert args.plugin_args == {"dont_resubmit_completed_jobs": True}
    assert (args.nprocs, args.skull_strip, args.skip_bids_validation, args.verbose) == (2, "force", True, 1)
