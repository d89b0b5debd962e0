"""Layering: the science never imports nipype/pybids; ``import brainparc`` (and the CLI parser) never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded(imports: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {imports}; print(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return eval(out.strip())


@pytest.mark.parametrize("module", ["brainparc.core", "brainparc.models", "brainparc.inference", "brainparc.pipeline"])
def test_science_is_free_of_nipype_and_pybids(module):
    assert _loaded(f"import {module}", ("nipype", "bids")) == []


def test_import_brainparc_and_parser_skip_torch():
    assert _loaded("import brainparc, brainparc.cli.main", ("torch", "nipype")) == []


def test_interfaces_know_nothing_of_bids():
    assert _loaded("import brainparc.interfaces.parcellate", ("bids", "torch")) == []
