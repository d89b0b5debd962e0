"""A small, composable trainer: model, loss, optimiser and scheduler factories are passed in.

Fixes of the reference loop (§7 item 9): the optimiser is created once (the reference re-created Adam every epoch,
resetting its moments); ``set_epoch`` is called on the sampler and the dataset; only rank 0 writes, atomically, at the
*end* of an epoch; a non-finite loss raises instead of being swallowed by a bare ``except`` (``max_non_finite`` of them
may be tolerated, each logged and taken as a zero-gradient step).  ``resume`` restores the
model, optimiser, scheduler, gradient scaler, epoch, step and the torch/numpy/random RNG states, so an interrupted
run continues exactly (on a deterministic device).

Usage::

    trainer = Trainer(model, cascade_loss_fn(registry, valid_size=96, big_size=96, alpha=alpha),
                      lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
                      lambda o: torch.optim.lr_scheduler.LambdaLR(o, reference_lr_factor),
                      device=device, out_dir=out, rank=env.rank)
    trainer.fit(make_loader(dataset, 2, env), epochs=200)
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from brainparc.train.labelsets import GroupRegistry
from brainparc.train.losses import CascadeWeights, cascade_loss
from brainparc.train.targets import branch_targets

__all__ = [
    "Trainer",
    "average_checkpoints",
    "cascade_loss_fn",
    "checkpoint_epoch",
    "latest_checkpoint",
    "reference_lr_factor",
    "strip_loss_fn",
]

LOGGER = logging.getLogger(__name__)
LossFn = Callable[[Sequence[Tensor], Mapping[str, Any]], tuple[Tensor, dict[str, float]]]


def reference_lr_factor(epoch: int, final_from: int | None = None) -> float:
    """The reference schedule relative to 1e-3 (spec §4.5): 1e-3 up to epoch 20, 5e-4 to 200, then 1e-4.

    ``final_from`` moves the last step (0.1) to that epoch: the reference's epochs are passes over its whole training
    set, and a CPU run of short epochs reaches epoch 200 only after many times the reference's samples.
    """
    if final_from is not None and epoch >= final_from:
        return 0.1
    return 1.0 if epoch <= 20 else (0.5 if epoch <= 200 else 0.1)


def cascade_loss_fn(
    registry: GroupRegistry,
    valid_size: int,
    big_size: int,
    alpha: Tensor | Sequence[float] | None = None,
    weights: CascadeWeights | None = None,
) -> LossFn:
    """Loss callable for :class:`Trainer`: branch targets from ``batch["target"]`` then :func:`cascade_loss`."""
    G = torch.as_tensor(registry.grouping)
    Gt = torch.as_tensor(registry.tissue_grouping)
    tissue_of_class = torch.as_tensor(registry.tissue_of_class)
    tissue_of_group = torch.as_tensor(registry.tissue_of_group)
    a = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)

    def loss(outputs: Sequence[Tensor], batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        dev = outputs[0].device
        targets = branch_targets(batch["target"].to(dev), tissue_of_group.to(dev), valid_size, big_size)
        return cascade_loss(
            outputs,
            targets,
            G.to(dev),
            Gt.to(dev),
            tissue_of_class.to(dev),
            alpha=None if a is None else a.to(dev),
            weights=weights or CascadeWeights(),
        )

    return loss


def strip_loss_fn(valid_size: int, big_size: int | None = None, **kwargs: Any) -> LossFn:
    """AutoStrip loss callable: (small, big) 0/1/IGNORE targets from ``batch["target"]``, then :func:`strip_loss`."""
    from brainparc.train.losses import strip_loss
    from brainparc.train.targets import centre_crop, centred_nearest_resize

    def loss(outputs: Sequence[Tensor], batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        t = batch["target"].to(outputs[0].device).long()
        targets = (centre_crop(t, valid_size), centred_nearest_resize(t, big_size or valid_size))
        total = strip_loss(outputs, targets, **kwargs)
        return total, {"total": float(total.detach())}

    return loss


def checkpoint_epoch(path: str | os.PathLike[str]) -> int | None:
    """The epoch of a ``chk_<epoch>.pt`` file name (None for other names)."""
    name = Path(path).name
    if name.startswith("chk_") and name.endswith(".pt") and name[4:-3].isdigit():
        return int(name[4:-3])
    return None


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The ``chk_<epoch>.pt`` with the highest epoch in ``directory`` (None when there is none)."""
    d = Path(directory)
    found = [(checkpoint_epoch(p), p) for p in d.glob("chk_*.pt")] if d.is_dir() else []
    found = [(e, p) for e, p in found if e is not None]
    return max(found)[1] if found else None


def average_checkpoints(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The last checkpoint's state with its model weights replaced by the mean over ``paths`` (weight averaging).

    Averaging the weights of the last checkpoints of a constant-learning-rate run (stochastic weight averaging,
    Izmailov et al. 2018) lands nearer the centre of the minimum the run wanders around. Floating tensors (BatchNorm
    running statistics included) are averaged; integer ones (``num_batches_tracked``) come from the last checkpoint.
    ``averaged_epochs`` lists the checkpoints' epochs.
    """
    if not paths:
        raise ValueError("no checkpoint to average")
    states = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    last = dict(states[-1])
    model = {}
    for key, value in last["model"].items():
        if value.is_floating_point():
            model[key] = torch.stack([s["model"][key].double() for s in states]).mean(0).to(value.dtype)
        else:
            model[key] = value
    last["model"] = model
    last["averaged_epochs"] = [int(s["epoch"]) for s in states]
    return last


def interpolate_weights(
    start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 − alpha) · start + alpha · tuned`` for floating tensors (integer ones from ``tuned``).

    WiSE-FT (Wortsman et al., CVPR 2022): a fine-tuned network and the weights it started from lie in one basin, and
    their interpolation can keep what the fine-tuning taught (here: CSF, from synthetic images) while losing less of
    what the start knew (here: real adult cortex); ``alpha`` = 1 is the fine-tuned network.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if set(start) != set(tuned):
        raise ValueError(f"the two state dicts differ in {sorted(set(start) ^ set(tuned))[:5]}")
    out = {}
    for key, value in tuned.items():
        if value.is_floating_point():
            out[key] = ((1 - alpha) * start[key].double() + alpha * value.double()).to(value.dtype)
        else:
            out[key] = value
    return out


def _seed_all(seed: int, epoch: int, rank: int) -> None:
    """Seed torch, numpy and ``random`` from ``(seed, epoch, rank)``: every rank's stream restarts at each epoch."""
    s = int(np.random.SeedSequence([seed, epoch, rank, 7]).generate_state(1, dtype=np.uint64)[0] >> 1)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 - the legacy global state that library code uses
    random.seed(s)


def _rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    _, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the legacy state libraries use
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Epoch loop around a passed-in model, loss callable and optimiser/scheduler factories.

    Parameters
    ----------
    model
        Any module (possibly DDP-wrapped); called as ``model(batch["image"])``.
    loss_fn
        ``loss_fn(outputs, batch) -> (loss, parts)`` (e.g. :func:`cascade_loss_fn`).
    optimizer_factory, scheduler_factory
        ``f(parameters) -> Optimizer`` and ``g(optimizer) -> LRScheduler`` (stepped once per epoch).
    device, out_dir, rank
        Where to compute; where rank 0 writes ``checkpoints/chk_<epoch>.pt`` and ``last.pt``; this process's rank.
    amp, grad_clip
        Mixed precision (bf16 autocast, on CUDA or on a CPU with bf16 support) and an optional gradient-norm clip.
    seed
        When given, torch/numpy/``random`` are reseeded from ``(seed, epoch, rank)`` at the start of every epoch, so a
        run resumed at an epoch boundary continues exactly on *every* rank (checkpoints hold rank 0's RNG only).
    keep_checkpoints
        Rank 0 keeps the newest ``keep_checkpoints`` ``chk_<epoch>.pt`` files (None: all).
    progress
        tqdm bar per epoch on rank 0.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        optimizer_factory: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
        scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None = None,
        *,
        device: str | torch.device = "cpu",
        out_dir: str | os.PathLike[str] | None = None,
        rank: int = 0,
        amp: bool = False,
        grad_clip: float | None = None,
        seed: int | None = None,
        keep_checkpoints: int | None = None,
        progress: bool = False,
        max_non_finite: int = 0,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.optimizer = optimizer_factory(self.model.parameters())  # once: Adam moments survive epochs
        self.scheduler = scheduler_factory(self.optimizer) if scheduler_factory else None
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.rank, self.grad_clip = rank, grad_clip
        #: non-finite losses or gradients tolerated in a run (each a zero-gradient step), and how many so far
        self.max_non_finite, self.non_finite = max_non_finite, 0
        self.amp = amp
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, float]] = []
        self.seed, self.keep_checkpoints, self.progress = seed, keep_checkpoints, progress
        #: JSON-like state of callers (e.g. the best validation score) saved in checkpoints and restored by resume
        self.extra_state: dict[str, Any] = {}

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimisation step; returns the loss parts (``total`` included)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        image = batch["image"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = self.model(image)
        loss, parts = self.loss_fn(outputs, batch)
        finite_loss = bool(torch.isfinite(loss))
        if not finite_loss:
            self._tolerate("loss", batch)
            # every rank still runs backward (DDP all-reduces), with gradients that are all zero
            loss, parts = sum((p * 0).sum() for p in self.model.parameters()), {}
        loss.backward()
        # the total norm (clipped only with grad_clip) also tells a non-finite gradient from a finite loss (bf16)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip or float("inf"))
        if finite_loss and not torch.isfinite(norm):
            self._tolerate("gradient", batch)  # the same on every rank: gradients are all-reduced
            self.optimizer.zero_grad(set_to_none=False)
            parts = {}
        self.optimizer.step()
        self.step += 1
        return parts

    def _tolerate(self, what: str, batch: Mapping[str, Any]) -> None:
        """Count a non-finite loss or gradient: raise past ``max_non_finite``, else log it."""
        where = f"non-finite {what} at epoch {self.epoch}, step {self.step}: {batch.get('subject')}"
        self.non_finite += 1
        if self.non_finite > self.max_non_finite:
            raise FloatingPointError(where)
        LOGGER.warning("%s; zero-gradient step (%d of %d tolerated)", where, self.non_finite, self.max_non_finite)

    def train_epoch(
        self, loader: Iterable[Mapping[str, Any]], max_steps: int | None = None, deadline: float | None = None
    ) -> dict[str, float]:
        """One pass over ``loader`` (after ``set_epoch`` on its sampler and dataset); mean loss parts.

        Stops early after ``max_steps`` steps or once ``time.monotonic()`` passes ``deadline``.

        With ``progress`` (rank 0) a tqdm bar shows the running loss and the epoch's ETA.
        """
        for obj in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch)
        if self.seed is not None:
            _seed_all(self.seed, self.epoch, self.rank)
        sums: dict[str, float] = {}
        n, skipped_before = 0, self.non_finite
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        if total is not None and max_steps is not None:
            total = min(total, max_steps)
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=f"epoch {self.epoch}", unit="it", dynamic_ncols=True, leave=False)
        try:
            for i, batch in enumerate(loader):
                if max_steps is not None and i >= max_steps:
                    break
                for k, v in self.train_step(batch).items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                if bar is not None:
                    bar.update(1)
                    finite = n - (self.non_finite - skipped_before)
                    bar.set_postfix(loss=f"{sums['total'] / finite:.4g}" if "total" in sums else None)
                if deadline is not None and self._past(deadline):
                    break
        finally:
            if bar is not None:
                bar.close()
        skipped = self.non_finite - skipped_before  # steps taken with zero gradients: not in the means
        means = {k: v / max(n - skipped, 1) for k, v in sums.items()}
        return means | {"steps": float(n), "non_finite": float(skipped)}

    def fit(
        self,
        loader: Iterable[Mapping[str, Any]],
        epochs: int,
        save_every: int = 1,
        max_steps_per_epoch: int | None = None,
        max_steps: int | None = None,
        on_epoch_end: Callable[[Trainer], None] | None = None,
        time_limit: float | None = None,
    ) -> list[dict[str, float]]:
        """Train from ``self.epoch`` up to ``epochs`` (exclusive) or until ``self.step`` reaches ``max_steps``.

        ``time_limit`` (seconds from the call) ends training after the step that passes it; that epoch counts as done.
        With several ranks every rank must agree on stopping, so rank 0's decision is broadcast at each step.

        After each epoch: the scheduler steps, ``on_epoch_end(self)`` runs (validation; it may add entries to
        ``self.history[-1]`` and ``self.extra_state``), then rank 0 writes a checkpoint every ``save_every`` epochs and
        after the last one.  An epoch cut short by ``max_steps`` counts as done.
        """
        deadline = None if time_limit is None else time.monotonic() + time_limit
        out_of_time = False
        while self.epoch < epochs and (max_steps is None or self.step < max_steps) and not out_of_time:
            limit = max_steps_per_epoch
            if max_steps is not None:
                limit = min(limit or max_steps, max_steps - self.step)
            parts = self.train_epoch(loader, limit, deadline)
            out_of_time = deadline is not None and self._past(deadline)
            parts["lr"] = float(self.optimizer.param_groups[0]["lr"])
            parts["epoch"] = float(self.epoch)
            self.history.append(parts)
            if self.is_main:
                LOGGER.info("epoch %d: %s", self.epoch, ", ".join(f"{k}={v:.4g}" for k, v in parts.items()))
            self.epoch += 1
            if self.scheduler is not None:
                self.scheduler.step()
            if on_epoch_end is not None:
                on_epoch_end(self)
            last = self.epoch >= epochs or (max_steps is not None and self.step >= max_steps) or out_of_time
            if (save_every and self.epoch % save_every == 0) or (last and save_every):
                self.save_checkpoint()
        return self.history

    def _past(self, deadline: float) -> bool:
        """Whether rank 0 has passed ``deadline`` (broadcast, so that every rank stops at the same step)."""
        flag = torch.tensor([time.monotonic() > deadline], dtype=torch.int32)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = flag.to(self.device) if torch.distributed.get_backend() == "nccl" else flag
            torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    # ---------------------------------------------------------------------------------------------- state
    def _bare_model(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)  # unwrap DDP / DataParallel

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`resume` needs (tensors and plain values only)."""
        return {
            "model": self._bare_model().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": _rng_state(),
            "history": self.history,
            "extra": self.extra_state,
        }

    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Write the state (rank 0 only; atomic) to ``path`` or ``out_dir/checkpoints/chk_<epoch>.pt``.

        Without ``path``, older ``chk_*.pt`` files beyond the newest ``keep_checkpoints`` are deleted;
        :func:`latest_checkpoint` finds the newest one.
        """
        if not self.is_main or (path is None and self.out_dir is None):
            return None
        target = Path(path) if path is not None else self.out_dir / "checkpoints" / f"chk_{self.epoch}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, target)
        if path is None and self.keep_checkpoints:
            old = sorted((e, p) for p in target.parent.glob("chk_*.pt") if (e := checkpoint_epoch(p)) is not None)
            for _, p in old[: max(len(old) - self.keep_checkpoints, 0)]:
                p.unlink(missing_ok=True)
        return target

    def export(self, path: str | os.PathLike[str], **card: Any) -> dict[str, Any] | None:
        """Write the weights with their model card (``brainparc.models.save``; rank 0 only).

        Put the training provenance in ``card["training"]`` (e.g. epochs, label declarations, and the adaptive class
        weights from :func:`brainparc.train.losses.class_weights_metadata`); the epoch is added to it.
        """
        if not self.is_main:
            return None
        from brainparc import models

        training = {"epochs": self.epoch, "steps": self.step, **dict(card.pop("training", {}))}
        return models.save(self._bare_model(), path, training=training, **card)

    def resume(self, path: str | os.PathLike[str]) -> None:
        """Restore model, optimiser, scheduler, epoch, step, history and RNG states from a checkpoint.

        A ``LambdaLR`` schedule sets the learning rate of the resumed epoch from this run's schedule and base rate, not
        the ones saved with the checkpoint, so a changed schedule (``--lr-final-from``) or base rate (``--lr``) applies
        from the first resumed epoch.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        self._bare_model().load_state_dict(state["model"])
        base_lrs = None if self.scheduler is None else list(self.scheduler.base_lrs)  # this run's, before loading
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
                self.scheduler.base_lrs = base_lrs
                at = self.scheduler.last_epoch
                for group, base, factor in zip(
                    self.optimizer.param_groups, base_lrs, self.scheduler.lr_lambdas, strict=True
                ):
                    group["initial_lr"], group["lr"] = base, base * factor(at)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state.get("history", []))
        self.extra_state = dict(state.get("extra", {}))
        _set_rng_state(state["rng"])
