"""Run the doctests of the BIDS-App modules (small pure helpers document themselves with examples)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "brainparc.bids.layout",
    "brainparc.bids.derivatives",
    "brainparc.labels",
    "brainparc.core.io",
    "brainparc.reports.qc",
    "brainparc.reports.figures",
    "brainparc.reports.participant",
    "brainparc.workflows.base",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
