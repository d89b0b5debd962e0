"""Tiny random-weight models for end-to-end runs (seconds per phantom on a CPU)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_paths(tmp_path_factory) -> list[str]:
    import torch

    from brainparc.models import build, save

    folder = tmp_path_factory.mktemp("tiny-models")
    torch.manual_seed(0)
    parc, strip = folder / "parc.safetensors", folder / "strip.safetensors"
    save(build("brainparc-tiny"), parc, preset="brainparc-tiny")
    save(build("autostrip-tiny"), strip, preset="autostrip-tiny")
    coarse = folder / "parc-3mm.safetensors"  # the demo's 2 mm MNI images at a 3 mm model grid: few windows
    save(build("brainparc-tiny"), coarse, preset="brainparc-tiny", spacing_mm=3.0)
    return [str(parc), str(strip), str(coarse)]
