"""The configuration of one training run: a frozen dataclass built from the command line and/or a config file.

Precedence: the dataclass defaults < the config file (``--config FILE``, JSON or TOML with the same keys as the command
line options, ``-`` or ``_`` spelling) < options given on the command line.  The resolved configuration is written to
``OUT/config.json`` by rank 0 at the start of every run (a resumed run overwrites it with its own settings).

Example ``train.toml``::

    task = "parc"
    data = "/data/seed"
    out = "/runs/lite-01"
    preset = "brainparc-lite"
    epochs = 300
    batch-size = 2
    synth-ratio = 0.5
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["DEVICES_HELP", "PRESET_CHOICES", "TASKS", "TrainConfig", "TrainUsageError", "load_config_file"]

TASKS = ("parc", "strip")
PRESET_CHOICES: dict[str, tuple[str, ...]] = {
    "parc": ("brainparc-atlas", "brainparc-lite", "brainparc-official", "brainparc-tiny"),
    "strip": ("autostrip-lite", "autostrip-official", "autostrip-tiny"),
}
DEFAULT_PRESET = {"parc": "brainparc-lite", "strip": "autostrip-lite"}
DEVICES_HELP = "auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK)"


class TrainUsageError(ValueError):
    """A bad setting found at run time (e.g. ``--device cuda`` without CUDA): exit code 2, like a parser error."""


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of ``brainparc train {parc,strip}`` (see ``brainparc train parc --help`` for each option).

    ``init`` starts from existing weights (fine-tuning): our ``.safetensors`` or an official checkpoint of the preset's
    architecture (a new optimiser; use ``resume`` to continue a run with its optimiser state).
    ``time_limit`` (seconds of training, e.g. what is left of a Slurm job) ends the run after the step that passes it,
    with a checkpoint and the exported weights as at a normal end.  ``lr_final_from`` moves the reference schedule's
    last step (0.1 × ``lr``) to that epoch (:func:`~brainparc.train.loop.reference_lr_factor`).
    ``pseudo_brain_prob`` applies to ``strip`` only; ``coord_noise`` (voxels) to atlas-guided presets only: their
    training patches get template coordinates displaced from the image like a registration error
    (:class:`~brainparc.train.data.PatchDataset`), so that the prior is not more exact in training than at run time.
    ``max_non_finite`` steps with a non-finite loss or gradient are logged and taken with zero gradients; one more
    stops the run.

    Exactly one of ``epochs`` and ``iterations`` bounds the run (``iterations`` counts optimiser steps of one rank; the
    epoch in which the budget runs out is cut short and counts as done).  ``patch_size``/``valid_size`` override the
    preset's window geometry (smaller windows for smoke runs) and use the exact fusion field of view (the official
    integer crops exist for 160/96 only); the exported model card records the geometry, so ``brainparc.models.load``
    rebuilds the same network.
    """

    task: str
    data: str
    out: str
    file_list: str = "file_list.csv"
    preset: str | None = None
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int = 2
    lr: float = 1e-3
    resume: str | None = None
    device: str = "auto"
    amp: bool = False
    num_workers: int | None = None  # None: sized from the CPUs and memory (brainparc.train.distributed)
    seed: int = 0
    synth_ratio: float = 0.5
    augment: bool = True
    patch_size: int | None = None
    valid_size: int | None = None
    val_every: int = 1
    val_max_subjects: int | None = None
    save_every: int = 1
    keep_checkpoints: int = 3
    grad_checkpoint: bool = False
    grad_clip: float | None = None
    foreground_prob: float = 0.9
    progress: bool = True
    patches_per_subject: int = 1
    pseudo_brain_prob: float = 0.8
    time_limit: float | None = None
    init: str | None = None
    lr_final_from: int | None = None
    coord_noise: float = 0.0
    max_non_finite: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.preset is None:
            object.__setattr__(self, "preset", DEFAULT_PRESET[self.task])
        if self.preset not in PRESET_CHOICES[self.task]:
            raise ValueError(
                f"preset {self.preset!r} is not a {self.task} preset; choose from {PRESET_CHOICES[self.task]}"
            )
        if self.epochs is not None and self.iterations is not None:
            raise ValueError("give either epochs or iterations, not both")
        if self.epochs is None and self.iterations is None:
            object.__setattr__(self, "epochs", 100)
        for name in (
            "epochs",
            "iterations",
            "batch_size",
            "val_every",
            "save_every",
            "keep_checkpoints",
            "patches_per_subject",
        ):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (0 if name in ("val_every", "save_every") else 1)):
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError("num-workers must be ≥ 0")
        if not 0.0 <= self.synth_ratio <= 1.0:
            raise ValueError(f"synth-ratio must lie in [0, 1], got {self.synth_ratio}")
        if not 0.0 <= self.foreground_prob <= 1.0:
            raise ValueError(f"foreground-prob must lie in [0, 1], got {self.foreground_prob}")
        if not 0.0 <= self.pseudo_brain_prob <= 1.0:
            raise ValueError(f"pseudo-brain-prob must lie in [0, 1], got {self.pseudo_brain_prob}")
        if self.max_non_finite < 0:
            raise ValueError(f"max-non-finite must be >= 0, got {self.max_non_finite}")
        if self.coord_noise < 0:
            raise ValueError(f"coord-noise must be >= 0 voxels, got {self.coord_noise}")
        if self.lr_final_from is not None and self.lr_final_from < 0:
            raise ValueError(f"lr-final-from must be an epoch >= 0, got {self.lr_final_from}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time-limit must be positive seconds, got {self.time_limit}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if (self.patch_size is None) != (self.valid_size is None):
            raise ValueError("give patch-size and valid-size together")
        if self.file_list.startswith("csvfile/"):  # accept the path relative to ROOT as well as the bare name
            object.__setattr__(self, "file_list", self.file_list.removeprefix("csvfile/"))

    # ------------------------------------------------------------------------------------------------ io
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Field names (the config-file keys, with ``_``)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_sources(cls, task: str, file_values: Mapping[str, Any], cli_values: Mapping[str, Any]) -> TrainConfig:
        """Merge defaults < ``file_values`` < ``cli_values`` (keys with ``-`` or ``_``); unknown keys are an error."""
        merged: dict[str, Any] = {"task": task}
        for source in (file_values, cli_values):
            for key, value in source.items():
                name = key.replace("-", "_")
                if name not in cls.keys():
                    raise ValueError(f"unknown training option {key!r}; known: {', '.join(cls.keys())}")
                merged[name] = value
        if merged.get("task") != task:
            raise ValueError(f"the config file is for task {merged.get('task')!r}, the command for {task!r}")
        for required in ("data", "out"):
            if merged.get(required) in (None, ""):
                raise ValueError(f"--{required} is required (on the command line or in the config file)")
        merged["data"], merged["out"] = os.fspath(merged["data"]), os.fspath(merged["out"])
        if merged.get("init") is not None:
            merged["init"] = os.fspath(merged["init"])
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        return dataclasses.asdict(self)

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/config.json`` atomically."""
        path = Path(directory) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("config.json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON (``.json``) or TOML (any other suffix) config file into a dict (keys as written)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the config must be a table/object of options")
    return data
