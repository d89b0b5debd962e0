"""Options added for the default weights' training: patches per subject, .nii files, pseudo-brain heads,
--time-limit, --init (with the lineage in the exported card)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from brainparc import models
from brainparc.train.config import TrainConfig, TrainUsageError
from brainparc.train.data import PatchDataset, find_file, pseudo_brain_mask
from brainparc.train.distributed import make_loader
from brainparc.train.loop import Trainer, cascade_loss_fn
from brainparc.train.run import build_model
from tests.train.conftest import PATCH, VALID, StubCascade


def test_patches_per_subject_repeats_every_subject(layout):
    one = PatchDataset(layout, "train", patch_size=PATCH)
    four = PatchDataset(layout, "train", patch_size=PATCH, patches_per_subject=4)
    assert len(four) == 4 * len(one)
    n = len(one)
    assert [four[i + n]["subject"] for i in range(n)] == [one[i]["subject"] for i in range(n)]
    with pytest.raises(ValueError):
        PatchDataset(layout, "train", patch_size=PATCH, patches_per_subject=0)


def test_uncompressed_files_are_found(tmp_path: Path):
    (tmp_path / "brain.nii").write_bytes(b"")
    assert find_file(tmp_path, "brain") == tmp_path / "brain.nii"
    (tmp_path / "brain.nii.gz").write_bytes(b"")
    assert find_file(tmp_path, "brain") == tmp_path / "brain.nii.gz"  # the compressed name still wins
    assert find_file(tmp_path, "edge") is None


def test_pseudo_brain_mask_is_a_cube_dilation():
    brain = torch.zeros(21, 21, 21)
    brain[10, 10, 10] = 1
    mask = pseudo_brain_mask(brain, torch.Generator().manual_seed(0), radius=(3, 3))
    assert mask.sum() == 7**3 and mask[7:14, 7:14, 7:14].all()
    r = [
        int(pseudo_brain_mask(brain, torch.Generator().manual_seed(s), (2, 9)).sum() ** (1 / 3) + 0.5)
        for s in range(20)
    ]
    assert all(5 <= k <= 19 and k % 2 == 1 for k in r) and len(set(r)) > 1  # random radius within the range


def test_time_limit_stops_training(layout):
    ds = PatchDataset(layout, "train", patch_size=PATCH, patches_per_subject=50)
    loader = make_loader(ds, 1, workers=0)
    trainer = Trainer(StubCascade(), cascade_loss_fn(ds.registry, VALID, VALID), lambda p: torch.optim.Adam(p))
    start = time.monotonic()
    trainer.fit(loader, epochs=1000, save_every=0, time_limit=0.5)
    assert time.monotonic() - start < 30
    assert trainer.epoch == 1 and 1 <= trainer.step < len(loader)  # stopped inside the first epoch, which counts


def test_init_loads_weights_and_records_lineage(tmp_path: Path):
    source = models.build("brainparc-tiny")
    path = tmp_path / "w.safetensors"
    card = models.save(source, path, training={"steps": 7})
    cfg = TrainConfig(task="parc", data=str(tmp_path), out=str(tmp_path / "o"), preset="brainparc-tiny", init=str(path))
    model, lineage = build_model(cfg)
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert lineage == {"sha256": card["sha256"], "preset": "brainparc-tiny", "training": {"steps": 7}}
    fresh, none = build_model(TrainConfig(task="parc", data="d", out="o", preset="brainparc-tiny"))
    assert none is None and not torch.equal(next(fresh.parameters()), next(model.parameters()))
    strip = tmp_path / "strip.safetensors"
    models.save(models.build("autostrip-tiny"), strip)
    with pytest.raises(TrainUsageError, match="AutoStripNet"):
        build_model(TrainConfig(task="parc", data="d", out="o", preset="brainparc-tiny", init=str(strip)))
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_config_checks_new_options():
    with pytest.raises(ValueError, match="time-limit"):
        TrainConfig(task="parc", data="d", out="o", time_limit=0)
    with pytest.raises(ValueError, match="pseudo-brain-prob"):
        TrainConfig(task="strip", data="d", out="o", pseudo_brain_prob=1.5)
    with pytest.raises(ValueError, match="patches-per-subject"):
        TrainConfig(task="parc", data="d", out="o", patches_per_subject=0)
