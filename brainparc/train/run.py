"""One training run from a :class:`~brainparc.train.config.TrainConfig`: the wiring behind ``brainparc train``.

Single process or under ``torchrun`` (``RANK``/``LOCAL_RANK``/``WORLD_SIZE``; NCCL on CUDA, Gloo on CPU).  What a run
writes into ``OUT`` (rank 0 only)::

    config.json                 the resolved configuration of the latest (re)start
    train.log                   the run log (every epoch's loss parts, validation scores, resume and export events)
    checkpoints/chk_<epoch>.pt  full state (model, optimiser, scheduler, epoch, step, RNG, history); newest kept
    validation/dice_<epoch>.csv per-subject, per-region and per-tissue Dice of the validation fold (+ a mean row)
    history.csv                 loss parts, learning rate and validation means per epoch
    learning_curve.png          training loss and validation Dice per epoch
    best.safetensors            weights of the best validation epoch (mean regional Dice; brain Dice for ``strip``)
    model.safetensors           final weights + model card, for ``brainparc parcellate --model OUT/model.safetensors``

``--resume auto`` continues from the newest ``checkpoints/chk_<epoch>.pt`` (a fresh start when there is none);
``--resume PATH`` from that file.  A run resumed at an epoch boundary reproduces the uninterrupted run (tested).
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainparc.train.config import TrainConfig, TrainUsageError
from brainparc.train.data import PatchDataset, fully_labelled_fractions, read_file_list, select_role
from brainparc.train.distributed import DistEnv, init_distributed, loader_workers, make_loader
from brainparc.train.loop import Trainer, cascade_loss_fn, latest_checkpoint, reference_lr_factor, strip_loss_fn
from brainparc.train.synth import SynthParams

__all__ = ["TrainDataError", "build_model", "check_data_root", "resolve_device", "run_training"]

LOGGER = logging.getLogger("brainparc.train")


class TrainDataError(Exception):
    """The training data root is missing or malformed (exit code 3)."""


def check_data_root(cfg: TrainConfig) -> None:
    """Fail early, with what was expected, when ``--data`` is not a usable seed layout."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise TrainDataError(f"data root not found: {root} (expected ROOT/csvfile/{cfg.file_list} and ROOT/data/)")
    csv_path = root / "csvfile" / cfg.file_list
    if not csv_path.is_file():
        raise TrainDataError(f"{csv_path} not found: the seed layout needs ROOT/csvfile/<list> (IDs, folder, fold)")
    try:
        entries = read_file_list(root, cfg.file_list)
    except (ValueError, KeyError) as err:
        raise TrainDataError(f"{csv_path}: {err}") from err
    if not select_role(entries, "train"):
        raise TrainDataError(f"{csv_path}: no training subject (fold 3)")
    missing = [e.path for e in entries if e.fold in (2, 3) and not e.path.is_dir()]
    if missing:
        raise TrainDataError(f"{len(missing)} subject folder(s) of {csv_path} missing, e.g. {missing[0]}")


def build_model(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any] | None]:
    """The preset's network, with the overridden window geometry: fresh weights (seeded by ``cfg.seed``), or the
    weights of ``cfg.init`` (fine-tuning; ours or the official checkpoint of the same architecture).

    Returns the model and, with ``cfg.init``, the lineage recorded in the exported card (sha256 and training section
    of the starting weights)."""
    from brainparc import models

    torch.manual_seed(cfg.seed)
    if cfg.patch_size is None:
        model = models.build(cfg.preset)
    else:
        row = models.PRESETS[cfg.preset]
        kwargs = dict(row.kwargs) | {"patch_size": cfg.patch_size, "valid_size": cfg.valid_size, "fusion_crops": None}
        model = models.BUILDERS[row.builder](**kwargs)
        model.preset = cfg.preset
    if isinstance(model, models.AtlasGuidedNet):
        models.attach_bundled_atlas(model)
    if cfg.init is not None:
        source, card = models.load(cfg.init)
        builder, wanted = card.get("arch", {}).get("builder"), type(model).__name__
        if builder not in (None, wanted):
            raise TrainUsageError(f"--init {cfg.init} holds {builder} weights, not {wanted}")
        try:
            model.load_state_dict(source.state_dict())
        except RuntimeError as err:
            raise TrainUsageError(f"--init {cfg.init} does not fit preset {cfg.preset}: {str(err)[:300]}") from err
        LOGGER.info("initialised from %s (sha256 %s)", cfg.init, str(card.get("sha256", ""))[:12])
        return model, {"sha256": card.get("sha256"), "preset": card.get("preset"), "training": card.get("training")}
    return model, None


def resolve_device(name: str, env: DistEnv) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` if CUDA is available else CPU; ``cuda`` → ``cuda:LOCAL_RANK``; ``cpu``."""
    if name == "auto":
        return env.device()
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainUsageError(f"--device {name}: CUDA is not available on this machine")
        return torch.device(f"cuda:{env.local_rank}") if (name == "cuda" or env.distributed) else torch.device(name)
    raise TrainUsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def _attach_log(out: Path, is_main: bool) -> logging.Handler | None:
    logger = logging.getLogger("brainparc")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)  # other ranks: warnings and errors only
    if not is_main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    return handler


def _datasets(
    cfg: TrainConfig, env: DistEnv, patch_size: int, normalisation: str, coords: bool = False
) -> tuple[PatchDataset, PatchDataset]:
    """Training and validation datasets sharing one group registry (``coords``: with template coordinates)."""
    common = dict(
        task=cfg.task, patch_size=patch_size, file_list=cfg.file_list, normalisation=normalisation, coords=coords
    )
    augment = SynthParams(lowres_prob=0.1, nonlin_std=2.0, translation=0.0) if cfg.augment else None
    train = PatchDataset(
        cfg.data,
        "train",
        synth_ratio=cfg.synth_ratio,
        augment=augment,
        foreground_prob=cfg.foreground_prob,
        seed=cfg.seed,
        rank=env.rank,
        patches_per_subject=cfg.patches_per_subject,
        pseudo_brain_prob=cfg.pseudo_brain_prob if cfg.task == "strip" else 0.0,
        coord_noise=cfg.coord_noise if coords else 0.0,
        **common,
    )
    val = PatchDataset(cfg.data, "val", registry=train.registry, **common)
    return train, val


def _class_weights(cfg: TrainConfig, train: PatchDataset) -> dict[str, Any] | None:
    """Adaptive class weights from the fully labelled training subjects (None → uniform, logged)."""
    from brainparc.train.losses import class_weights_metadata

    if cfg.task != "parc":
        return None
    try:
        fractions = fully_labelled_fractions(train, max_subjects=50, seed=cfg.seed)
    except ValueError as err:
        LOGGER.warning("uniform class weights: %s", err)
        return None
    return class_weights_metadata(fractions)


def _make_trainer(cfg: TrainConfig, model: nn.Module, loss_fn: Any, device: torch.device, env: DistEnv) -> Trainer:
    if env.distributed:
        ids = [device.index] if device.type == "cuda" else None
        # rank 0's BN running statistics are broadcast every forward (no SyncBN: batch statistics stay per rank);
        # every parameter is used by the losses, so no unused-parameter search
        model = nn.parallel.DistributedDataParallel(model.to(device), device_ids=ids)
    lr = cfg.lr
    return Trainer(
        model,
        loss_fn,
        lambda p: torch.optim.Adam(p, lr=lr, amsgrad=True),
        lambda o: torch.optim.lr_scheduler.LambdaLR(
            o, functools.partial(reference_lr_factor, final_from=cfg.lr_final_from)
        ),
        device=device,
        out_dir=cfg.out,
        rank=env.rank,
        amp=cfg.amp,
        grad_clip=cfg.grad_clip,
        seed=cfg.seed,
        keep_checkpoints=cfg.keep_checkpoints,
        progress=cfg.progress,
        max_non_finite=cfg.max_non_finite,
    )


def _resume(cfg: TrainConfig, trainer: Trainer) -> None:
    if cfg.resume is None:
        return
    path = latest_checkpoint(Path(cfg.out) / "checkpoints") if cfg.resume == "auto" else Path(cfg.resume)
    if path is None:
        LOGGER.info("--resume auto: no checkpoint in %s, starting fresh", Path(cfg.out) / "checkpoints")
        return
    if not path.is_file():
        raise FileNotFoundError(f"--resume {cfg.resume}: no such checkpoint")
    trainer.resume(path)
    LOGGER.info("resumed from %s (epoch %d, step %d)", path, trainer.epoch, trainer.step)


def _write_history(history: list[dict[str, float]], out: Path) -> None:
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    with (out / "history.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def _epoch_end_hook(cfg: TrainConfig, val: PatchDataset, card: dict[str, Any], device: torch.device, env: DistEnv):
    """Rank 0 validates every ``val_every`` epochs, keeps the best weights, writes the tables and the plot."""
    from brainparc.train.validate import plot_learning_curve, validate, write_dice_csv

    out = Path(cfg.out)

    def hook(trainer: Trainer) -> None:
        due = cfg.val_every and trainer.epoch % cfg.val_every == 0 and len(val) > 0
        if trainer.is_main and due:
            model = trainer._bare_model()
            rows = validate(model, val, card, device=device, amp=cfg.amp, max_subjects=cfg.val_max_subjects)
            if rows:
                write_dice_csv(rows, out / "validation" / f"dice_{trainer.epoch:04d}.csv")
                score = float(np.nanmean([r["mean_parc"] for r in rows]))
                trainer.history[-1]["val_mean_parc"] = score
                if "mean_tissue" in rows[0]:
                    trainer.history[-1]["val_mean_tissue"] = float(np.nanmean([r["mean_tissue"] for r in rows]))
                LOGGER.info("epoch %d validation: mean Dice %.4f over %d subjects", trainer.epoch, score, len(rows))
                best = trainer.extra_state.get("best_score")
                if np.isfinite(score) and (best is None or score > best):
                    trainer.extra_state.update(best_score=score, best_epoch=trainer.epoch)
                    trainer.export(out / "best.safetensors", **_export_card(trainer, card))
        if trainer.is_main:
            _write_history(trainer.history, out)
            plot_learning_curve(trainer.history, out / "learning_curve.png")
        if env.distributed:
            torch.distributed.barrier()

    return hook


def _export_card(trainer: Trainer, card: dict[str, Any]) -> dict[str, Any]:
    """Card fields of exported weights: the training section, and the atlas of atlas-guided presets."""
    extra = {"atlas": card["atlas"]} if "atlas" in card else {}
    return {"training": _card_training(trainer, card), **extra}


def _card_training(trainer: Trainer, card: dict[str, Any]) -> dict[str, Any]:
    return {**card["training"], **{k: v for k, v in trainer.extra_state.items() if k.startswith("best")}}


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train as configured; returns a summary (epochs, steps, written paths; rank 0's view)."""
    env = DistEnv.from_env()
    device = resolve_device(cfg.device, env)
    check_data_root(cfg)
    out = Path(cfg.out)
    handler = _attach_log(out, env.is_main)
    try:
        init_distributed(env, backend="nccl" if device.type == "cuda" else "gloo")
        if env.is_main:
            cfg.write(out)
        LOGGER.info("brainparc train %s: world size %d, device %s, config %s", cfg.task, env.world_size, device, cfg)
        return _run(cfg, env, device)
    finally:
        if handler is not None:
            logging.getLogger("brainparc").removeHandler(handler)
            handler.close()
        if env.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(cfg: TrainConfig, env: DistEnv, device: torch.device) -> dict[str, Any]:
    from brainparc import models
    from brainparc.train.memory import enable_grad_checkpointing

    model, lineage = build_model(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed window size: let cuDNN pick the fastest 3-D convolutions
    base_card = dict(models.PRESETS[cfg.preset].card)
    atlas_guided = isinstance(model, models.AtlasGuidedNet)
    if atlas_guided:
        base_card["atlas"] = models.bundled_atlas_entry()
    train, val = _datasets(cfg, env, model.patch_size, base_card["normalisation"], coords=atlas_guided)
    weights = _class_weights(cfg, train)
    if cfg.grad_checkpoint:
        LOGGER.info("gradient checkpointing on %d blocks", enable_grad_checkpointing(model))
    if cfg.task == "parc":
        alpha = None if weights is None else weights["alpha"]
        loss_fn = cascade_loss_fn(train.registry, model.valid_size, model.valid_size, alpha)
    else:
        loss_fn = strip_loss_fn(model.valid_size)
    trainer = _make_trainer(cfg, model, loss_fn, device, env)
    _resume(cfg, trainer)
    workers = cfg.num_workers
    if workers is None:
        workers = loader_workers(env.world_size)
        LOGGER.info(
            "DataLoader workers per rank: %d (from %d CPUs, %.1f GB available, world size %d; --num-workers sets it)",
            workers, len(os.sched_getaffinity(0)), os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9,
            env.world_size,
        )  # fmt: skip
    loader = make_loader(train, cfg.batch_size, env, workers=workers, seed=cfg.seed, pin_memory=False)
    if len(loader) == 0:
        raise TrainDataError(
            f"{len(train)} training subject(s) cannot fill one batch of {cfg.batch_size} per rank × {env.world_size}"
        )
    declarations = {f: c.declaration.name for f, (c, _) in train.declarations.items()}
    training = {"config": cfg.to_dict(), "world_size": env.world_size, "label_declarations": declarations}
    if weights is not None:
        training["class_weights"] = weights
    if lineage is not None:
        training["initialised_from"] = lineage
    card = base_card | {"training": training}
    epochs = cfg.epochs if cfg.epochs is not None else math.ceil(cfg.iterations / len(loader)) + trainer.epoch
    hook = _epoch_end_hook(cfg, val, card, device, env)
    trainer.fit(
        loader,
        epochs=epochs,
        save_every=cfg.save_every,
        max_steps=cfg.iterations,
        on_epoch_end=hook,
        time_limit=cfg.time_limit,
    )
    final = Path(cfg.out) / "model.safetensors"
    trainer.export(final, **_export_card(trainer, card))
    LOGGER.info("finished at epoch %d, step %d; weights written to %s", trainer.epoch, trainer.step, final)
    if device.type == "cuda":
        LOGGER.info("peak GPU memory %.0f MiB", torch.cuda.max_memory_allocated(device) / 2**20)
    return {"epochs": trainer.epoch, "steps": trainer.step, "weights": final, "is_main": env.is_main}
