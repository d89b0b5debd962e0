"""Shared fixtures: the location of ../shared/data and a skip marker for tests that need it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")

SHARED_DATA = Path(os.environ.get("BRAINPARC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def no_bundled_weights(monkeypatch, tmp_path) -> None:
    """An install without the package data: the bundled-weights folder points at an empty path."""
    from brainparc.models import checkpoints

    monkeypatch.setattr(checkpoints, "WEIGHTS_DIR", tmp_path / "no-weights")
