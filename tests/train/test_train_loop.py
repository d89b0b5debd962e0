"""Trainer: overfitting, exact resume, rank-0-only writes, set_epoch; the brainparc-tiny preset (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainparc.train.data import PatchDataset
from brainparc.train.distributed import DistEnv, make_loader
from brainparc.train.loop import Trainer, average_checkpoints, cascade_loss_fn, latest_checkpoint, reference_lr_factor
from tests.train.conftest import PATCH, VALID, StubCascade

torch.set_num_threads(1)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2, amsgrad=True)


def _trainer(ds: PatchDataset, out: Path | None = None, rank: int = 0, seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    return Trainer(
        StubCascade(),
        cascade_loss_fn(ds.registry, VALID, VALID),
        _adam,
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, reference_lr_factor),
        out_dir=out,
        rank=rank,
    )


def test_overfits_one_batch(layout):
    ds = PatchDataset(layout, "train", patch_size=PATCH, seed=0)
    batch = next(iter(make_loader(ds, 2, workers=0, shuffle=False)))
    trainer = _trainer(ds)
    losses = [trainer.train_step(batch)["total"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_resume_continues_exactly(layout, tmp_path):
    ds = PatchDataset(layout, "train", patch_size=PATCH, synth_ratio=0.5, seed=0)
    loader = make_loader(ds, 2, workers=0)
    full = _trainer(ds, tmp_path / "a")
    full.fit(loader, epochs=3)
    part = _trainer(ds, tmp_path / "b")
    part.fit(loader, epochs=2)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints") == tmp_path / "b" / "checkpoints" / "chk_2.pt"
    resumed = _trainer(ds, seed=123)  # different init: everything must come from the checkpoint
    resumed.resume(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert resumed.epoch == 2 and resumed.optimizer.state  # Adam moments restored
    resumed.fit(loader, epochs=3)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.history[-1]["total"] == pytest.approx(full.history[-1]["total"], rel=0, abs=0)
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch == 3


def test_only_rank0_writes(layout, tmp_path):
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    assert _trainer(ds, tmp_path, rank=1).save_checkpoint() is None
    assert _trainer(ds, tmp_path, rank=1).save_checkpoint(tmp_path / "x.pt") is None
    assert not any(tmp_path.rglob("*.pt"))
    assert _trainer(ds, tmp_path, rank=0).save_checkpoint(tmp_path / "x.pt") == tmp_path / "x.pt"


def test_set_epoch_reaches_sampler_and_dataset(layout):
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    loader = make_loader(ds, 2, DistEnv(rank=1, world_size=2), workers=0)
    seen = []
    loader.sampler.set_epoch = lambda e: seen.append(("sampler", e))
    trainer = _trainer(ds)
    trainer.fit(loader, epochs=2, save_every=0)
    assert seen == [("sampler", 0), ("sampler", 1)] and ds.epoch == 1
    assert len(loader) == 1  # 4 training subjects, 2 ranks, batch 2


def test_non_finite_loss_raises(layout):
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    trainer = Trainer(StubCascade(), lambda out, b: (out[0].sum() * float("nan"), {}), _adam)
    batch = next(iter(make_loader(ds, 2, workers=0)))
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.train_step(batch)


@pytest.mark.parametrize("amp", [False, True])
def test_amp_autocasts_the_forward_on_cpu(layout, amp):
    """--amp on the CPU runs the forward in bfloat16 (AMX/AVX512-BF16 CPUs train ~1.6x faster); the loss sees it."""
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    seen = []

    def loss(out, batch):
        seen.append(out[0].dtype)
        return out[0].float().mean(), {"total": 0.0}

    trainer = Trainer(StubCascade(), loss, _adam, amp=amp)
    trainer.train_step(next(iter(make_loader(ds, 2, workers=0))))
    assert seen == [torch.bfloat16 if amp else torch.float32]


def test_dist_env_from_env():
    env = DistEnv.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (env.rank, env.local_rank, env.world_size, env.is_main, env.distributed) == (3, 1, 4, False, True)
    assert DistEnv.from_env({}) == DistEnv() and DistEnv().is_main
    assert reference_lr_factor(20) == 1.0 and reference_lr_factor(21) == 0.5 and reference_lr_factor(201) == 0.1


def test_lr_final_from_moves_the_last_step_and_applies_from_the_resumed_epoch(layout, tmp_path):
    """``--lr-final-from E``: 0.1 from epoch E on (earlier than the reference's 200), also in a run resumed from a
    checkpoint written under the plain schedule, from its first resumed epoch."""
    import functools

    assert reference_lr_factor(119, final_from=120) == 0.5 and reference_lr_factor(120, final_from=120) == 0.1
    assert reference_lr_factor(5, final_from=3) == 0.1
    ds = PatchDataset(layout, "train", patch_size=PATCH, seed=0)
    loader = make_loader(ds, 2, workers=0)
    _trainer(ds, tmp_path).fit(loader, epochs=2)
    late = functools.partial(reference_lr_factor, final_from=2)
    resumed = Trainer(
        StubCascade(),
        cascade_loss_fn(ds.registry, VALID, VALID),
        _adam,
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, late),
        out_dir=tmp_path,
    )
    resumed.resume(latest_checkpoint(tmp_path / "checkpoints"))
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # 0.1 x the base 1e-2; saved with 1e-2
    resumed.fit(loader, epochs=3)
    assert resumed.history[-1]["lr"] == pytest.approx(1e-3)
    torch.load(latest_checkpoint(tmp_path / "checkpoints"), weights_only=True)  # a partial's state loads weights-only
    lower = Trainer(  # a changed base rate (--lr) applies on resume too: 0.1 x 1e-3 instead of 0.1 x the saved 1e-2
        StubCascade(),
        cascade_loss_fn(ds.registry, VALID, VALID),
        lambda params: torch.optim.Adam(params, lr=1e-3),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, late),
        out_dir=tmp_path,
    )
    lower.resume(latest_checkpoint(tmp_path / "checkpoints"))
    assert lower.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    lower.fit(loader, epochs=4)
    assert lower.history[-1]["lr"] == pytest.approx(1e-4)


def test_export_writes_a_model_card(tmp_path):
    from brainparc import models
    from brainparc.train.losses import class_weights_metadata

    torch.manual_seed(0)
    net = models.build("brainparc-tiny")
    trainer = Trainer(net, lambda out, b: (out[0].sum(), {}), _adam)
    trainer.epoch = 7
    weights = class_weights_metadata([0.0] + [1 / 106] * 106)
    card = trainer.export(tmp_path / "m.safetensors", training={"class_weights": weights})
    assert card["training"]["epochs"] == 7 and card["training"]["class_weights"]["a"] == 1.19
    _, card2 = models.load(tmp_path / "m.safetensors")
    assert card2["training"]["class_weights"]["alpha"] == weights["alpha"]
    rank1 = Trainer(net, lambda out, b: (out[0].sum(), {}), _adam, rank=1)
    assert rank1.export(tmp_path / "n.safetensors") is None and not (tmp_path / "n.safetensors").exists()


@pytest.mark.slow
def test_tiny_preset_overfits_one_synthetic_case():
    """brainparc-tiny's architecture (48³ window, 32³ outputs to keep it short) on one synthetic image.

    Measured: total 26.1 → 12.0 in 20 Adam steps (lr 1e-2), ≈2.3 s per step on one shared CPU thread.
    """
    from brainparc import models
    from brainparc.models.brainparc_net import BrainParcNet
    from brainparc.train.data import _edge_array, _normalise
    from brainparc.train.labelsets import GroupRegistry, builtin_declaration
    from brainparc.train.synth import SynthParams, synthesize
    from tests.train.conftest import phantom_labels

    torch.manual_seed(0)
    kwargs = dict(models.PRESETS["brainparc-tiny"].kwargs) | {"patch_size": 48, "valid_size": 32}
    model = BrainParcNet(**kwargs)
    reg = GroupRegistry()
    reg.compile(builtin_declaration("full"))
    lab = torch.from_numpy(phantom_labels((48, 48, 48), inner=91, outer=1)).long()
    img, lab = synthesize(lab, torch.Generator().manual_seed(0), SynthParams(deform=False))
    x = _normalise(img.numpy(), "official-zscore", None)
    image = torch.stack([torch.from_numpy(x), torch.from_numpy(_normalise(_edge_array(x), "official-zscore", None))])
    batch = {"image": image[None], "target": lab[None]}
    trainer = Trainer(model, cascade_loss_fn(reg, 32, 32), lambda p: torch.optim.Adam(p, lr=1e-2))
    losses = [trainer.train_step(batch)["total"] for _ in range(24)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_average_checkpoints_means_float_weights_keeps_the_rest_of_the_last(tmp_path):
    """Weight averaging: floating tensors (BatchNorm statistics too) are averaged, integer counters and the training
    state come from the last checkpoint, and the averaged epochs are recorded."""
    paths = []
    for epoch, w in [(3, 1.0), (4, 2.0), (5, 6.0)]:
        model = {
            "conv.weight": torch.full((2, 2), w),
            "bn.running_var": torch.full((2,), w * 2),
            "bn.n": torch.tensor(epoch),
        }
        paths.append(tmp_path / f"chk_{epoch}.pt")
        torch.save({"model": model, "epoch": epoch, "step": 10 * epoch}, paths[-1])
    state = average_checkpoints(paths)
    assert torch.allclose(state["model"]["conv.weight"], torch.full((2, 2), 3.0))
    assert torch.allclose(state["model"]["bn.running_var"], torch.full((2,), 6.0))
    assert int(state["model"]["bn.n"]) == 5 and state["epoch"] == 5 and state["step"] == 50
    assert state["averaged_epochs"] == [3, 4, 5]
    assert torch.equal(average_checkpoints(paths[:1])["model"]["conv.weight"], torch.full((2, 2), 1.0))
    with pytest.raises(ValueError):
        average_checkpoints([])


def test_tolerated_non_finite_losses_are_zero_gradient_steps_then_the_next_raises(layout):
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    model = StubCascade()
    trainer = Trainer(model, lambda out, b: (out[0].sum() * float("nan"), {"total": 1.0}), _adam, max_non_finite=1)
    before = [p.detach().clone() for p in model.parameters()]
    batch = next(iter(make_loader(ds, 2, workers=0)))
    assert trainer.train_step(batch) == {}  # no loss parts from a skipped step
    assert trainer.non_finite == 1 and trainer.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # zero gradients
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.train_step(batch)


def test_a_non_finite_gradient_of_a_finite_loss_is_caught_too(layout):
    """bf16 backward can overflow with a finite loss; the step must not write NaN into the weights."""
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    model = StubCascade()
    trainer = Trainer(model, lambda out, b: ((out[0].sum() * 0).sqrt(), {"total": 0.0}), _adam, max_non_finite=1)
    batch = next(iter(make_loader(ds, 2, workers=0)))
    assert trainer.train_step(batch) == {}
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        trainer.train_step(batch)


def test_epoch_means_leave_out_the_tolerated_steps(layout):
    """An epoch's loss means are over its finite steps; its count of zero-gradient steps is its own, not the run's."""
    ds = PatchDataset(layout, "train", patch_size=PATCH)
    values = iter([2.0, float("nan"), 4.0])

    def loss(out, b):
        v = next(values)
        return out[0].sum() * 0 + v, {"total": v}

    trainer = Trainer(StubCascade(), loss, _adam, max_non_finite=1)
    loader = make_loader(ds, 1, workers=0)
    parts = trainer.train_epoch(loader, max_steps=3)
    assert parts["steps"] == 3 and parts["non_finite"] == 1 and parts["total"] == 3.0
