"""scripts/export_weights.py: one checkpoint or the weight average of several becomes bundled weights with a card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brainparc import models
from tests.scripts import load_script


def _run(tmp_path: Path, scales: list[float]) -> list[Path]:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"preset": "brainparc-atlas", "batch_size": 2}), encoding="utf-8")
    base = models.build("brainparc-atlas").state_dict()
    paths = []
    for epoch, scale in enumerate(scales, start=1):
        state = {k: v * scale if v.is_floating_point() else v for k, v in base.items()}
        paths.append(run / "checkpoints" / f"chk_{epoch}.pt")
        torch.save({"model": state, "epoch": epoch, "step": 26 * epoch, "history": []}, paths[-1])
    return paths


def test_export_averages_checkpoints_and_records_them(tmp_path):
    export = load_script("export_weights").export
    paths = _run(tmp_path, [1.0, 3.0])
    out = tmp_path / "w.safetensors"
    card = export(paths, out, "preliminary", {}, "test", None)
    assert card["training"]["averaged_epochs"] == [1, 2] and card["training"]["steps"] == 52
    model, loaded = models.load(out)
    ref = torch.load(paths[0], weights_only=True)["model"]
    key = next(k for k, v in ref.items() if v.is_floating_point() and v.abs().sum() > 0 and "running" not in k)
    torch.testing.assert_close(model.state_dict()[key], 2.0 * ref[key], rtol=2e-3, atol=1e-3)  # float16 storage
    assert loaded["sha256"] == card["sha256"]


def test_export_refuses_checkpoints_of_different_runs(tmp_path):
    export = load_script("export_weights").export
    a = _run(tmp_path / "a", [1.0])
    b = _run(tmp_path / "b", [1.0])
    with pytest.raises(ValueError, match="one run"):
        export(a + b, tmp_path / "w.safetensors", "preliminary", {}, "test", None)


def test_export_records_the_start_and_interpolates_with_it(tmp_path):
    """A fine-tuning run's card names its start (sha256); --wise-ft 0.25 lands a quarter of the way to the tuned."""
    export = load_script("export_weights").export
    start = models.build("brainparc-atlas")
    start_path = tmp_path / "start.safetensors"
    start_card = models.save(start, start_path, preset="brainparc-atlas", inference={"overlap": 0.0})
    paths = _run(tmp_path, [3.0])  # the "fine-tuned" weights: 3 x the fresh ones
    out = tmp_path / "w.safetensors"
    with pytest.raises(ValueError, match="started from"):
        export(paths, out, "preliminary", {}, "test", None, None, 0.25)
    card = export(paths, out, "preliminary", {}, "test", None, start_path, 0.25)
    assert card["training"]["initialised_from"]["sha256"] == start_card["sha256"]
    assert card["training"]["wise_ft_alpha"] == 0.25
    assert card["inference"]["overlap"] == 0.0  # the start's inference defaults, not the preset's 0.25
    other = tmp_path / "given.safetensors"
    assert export(paths, other, "preliminary", {"overlap": 0.5}, "", None, start_path)["inference"]["overlap"] == 0.5
    model, _ = models.load(out)
    tuned = torch.load(paths[0], weights_only=True)["model"]
    begin = models.load(start_path)[0].state_dict()
    key = next(k for k, v in tuned.items() if v.is_floating_point() and v.abs().sum() > 0 and "running" not in k)
    torch.testing.assert_close(model.state_dict()[key], 0.75 * begin[key] + 0.25 * tuned[key], rtol=2e-3, atol=1e-3)
