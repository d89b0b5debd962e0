"""Networks, presets and weight files of brainparc.

Public API: :data:`PRESETS`, :func:`available_models`, :func:`build`, :func:`save`, :func:`load`, plus the exceptions
:class:`CheckpointError` and :class:`ModelNotFoundError`. A preset is a row of :data:`PRESETS` (builder + keyword
arguments + model-card defaults), never a subclass. Importing this package never imports nipype or pybids.

Examples
--------
>>> from brainparc.models import build
>>> net = build("brainparc-tiny")
>>> net.preset, net.patch_size, net.valid_size, net.in_channels, net.out_channels
('brainparc-tiny', 80, 48, 2, 107)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atlas_net import AtlasGuidedNet, AtlasPriorNet, atlas_guided_kwargs
from .autostrip_net import OFFICIAL_FUSION_CROPS as AUTOSTRIP_OFFICIAL_CROPS
from .autostrip_net import AutoStripNet
from .brainparc_net import OFFICIAL_FUSION_CROPS as BRAINPARC_OFFICIAL_CROPS
from .brainparc_net import BrainParcNet, BrainParcStage
from .checkpoints import (
    DEFAULT_MODELS,
    CheckpointError,
    ModelNotFoundError,
    bundled_path,
    infer_official_preset,
    is_safetensors,
    load_state_dict_strict,
    missing_bundled_message,
    read_official_state_dict,
    read_safetensors,
    sha256_file,
    write_safetensors,
)
from .tissue import TissueFromParcels

__all__ = [
    "ATLAS_ONLY",
    "BUILDERS",
    "DEFAULT_MODELS",
    "PRESETS",
    "AtlasGuidedNet",
    "AtlasPriorNet",
    "AutoStripNet",
    "BrainParcNet",
    "BrainParcStage",
    "CheckpointError",
    "ModelNotFoundError",
    "Preset",
    "TissueFromParcels",
    "attach_bundled_atlas",
    "available_models",
    "build",
    "bundled_atlas_entry",
    "load",
    "save",
]

LOGGER = logging.getLogger(__name__)

#: Network classes a model card may name under ``arch.builder`` (explicit: nothing is discovered at run time).
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "BrainParcNet": BrainParcNet,
    "AutoStripNet": AutoStripNet,
    "AtlasGuidedNet": AtlasGuidedNet,
}

TASKS = ("parc", "strip")
#: The ``--model`` name of atlas-only mode: the warped atlas prior's argmax, no network (:class:`AtlasPriorNet`).
ATLAS_ONLY = "atlas"
NORMALISATIONS = ("official-zscore", "minmax", "in-mask-zscore")


@dataclass(frozen=True)
class Preset:
    """One registry row: which builder, with which keywords, and the model-card defaults for its weights."""

    builder: str
    kwargs: Mapping[str, Any]
    card: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


_PARC_CARD = {"task": "parc", "labels": "dk_struct"}
_STRIP_CARD = {"task": "strip", "labels": "brain_mask"}

#: The preset registry. Official rows reproduce the published networks exactly (key names, shapes, crops).
PRESETS: dict[str, Preset] = {
    "brainparc-official": Preset(
        "BrainParcNet",
        dict(widths=(16, 32, 64, 128, 256), res_depths=(4, 4, 4, 8), bottleneck_depth=8, patch_size=160,
             valid_size=96, fusion_crops=BRAINPARC_OFFICIAL_CROPS),
        dict(_PARC_CARD, spacing_mm=0.8, normalisation="official-zscore"),
        "Published BT_Joint cascade, 279,780,824 parameters; loads BrainParc.pth.gz.",
    ),
    "brainparc-lite": Preset(
        "BrainParcNet",
        dict(widths=(4, 8, 16, 32, 64), res_depths=(1, 1, 1, 2), bottleneck_depth=2, patch_size=160,
             valid_size=96, fusion_crops=None, head_kernel_size=1, head_hidden=32),
        # CPU defaults: bf16 autocast and 25 % overlap give 12 windows, ~49 s and 1.9 GB for a 1 mm adult on 2 cores
        # (benchmarks/inference.py), against 18 windows, ~135 s and 2.4 GB in float32 at 50 % overlap.
        dict(_PARC_CARD, spacing_mm=1.0, normalisation="in-mask-zscore", inference={"overlap": 0.25, "cpu_amp": True}),
        "Narrow cascade (6.2 M parameters, ~71 GMAC per 160³ window) with the official geometry, exact fusion FOV "
        "and a 1×1 head of width 32 (the official 3×3×3 107-channel head would dominate the compute).",
    ),
    "brainparc-atlas": Preset(
        "AtlasGuidedNet",
        atlas_guided_kwargs(widths=(4, 8, 16, 16, 32), res_depths=(1, 1, 1, 1), bottleneck_depth=1, patch_size=64,
                            valid_size=32),
        dict(_PARC_CARD, spacing_mm=1.0, normalisation="in-mask-zscore", inference={"overlap": 0.25, "cpu_amp": True}),
        "Atlas-guided cascade (brainparc.models.atlas_net): a narrow BrainParc cascade on 64³ windows whose parcel "
        "probabilities multiply the warped DK-struct atlas prior; inputs intensity, edge and template coordinates.",
    ),
    "brainparc-tiny": Preset(
        "BrainParcNet",
        dict(widths=(2, 4, 4, 8, 8), res_depths=(1, 1, 1, 1), bottleneck_depth=1, patch_size=80,
             valid_size=48, fusion_crops=None, head_kernel_size=1, head_hidden=8),
        dict(_PARC_CARD, spacing_mm=1.0, normalisation="in-mask-zscore"),
        "Very small cascade on 80³ windows for tests and training smoke runs.",
    ),
    "autostrip-official": Preset(
        "AutoStripNet",
        dict(widths=(16, 32, 64, 128, 256), res_depths=(1, 1, 2, 2), patch_size=160, valid_size=128,
             fusion_crops=AUTOSTRIP_OFFICIAL_CROPS),
        dict(_STRIP_CARD, spacing_mm=None, normalisation="minmax"),
        "Published AutoStrip ASNet, 31,297,016 parameters; loads AutoStrip_Full.pth.gz.",
    ),
    "autostrip-lite": Preset(
        "AutoStripNet",
        dict(widths=(4, 8, 16, 32, 64), res_depths=(1, 1, 1, 1), patch_size=160, valid_size=128,
             fusion_crops=None),
        # CPU defaults: bf16 autocast is ~1.6x faster than float32 and moved the brain-mask Dice by +0.0005 on the two
        # AutoStrip reference infants (the window count of a brain-sized ROI is the same at 25 % and 50 % overlap).
        dict(_STRIP_CARD, spacing_mm=1.0, normalisation="minmax", inference={"overlap": 0.25, "cpu_amp": True}),
        "Narrow AutoStrip (1.4 M parameters, ~46 GMAC per 160³ window), official geometry, exact fusion FOV.",
    ),
    "autostrip-tiny": Preset(
        "AutoStripNet",
        dict(widths=(2, 4, 4, 8, 8), res_depths=(1, 1, 1, 1), patch_size=80, valid_size=64, fusion_crops=None),
        dict(_STRIP_CARD, spacing_mm=1.0, normalisation="minmax"),
        "Very small AutoStrip on 80³ windows for tests and training smoke runs.",
    ),
}  # fmt: skip


def available_models() -> list[str]:
    """Names accepted by :func:`build`, sorted."""
    return sorted(PRESETS)


def _instantiate(builder: str, kwargs: Mapping[str, Any], *, empty: bool = False) -> nn.Module:
    if builder not in BUILDERS:
        raise ValueError(f"unknown network builder {builder!r}; known: {sorted(BUILDERS)}")
    if not empty:
        return BUILDERS[builder](**kwargs)
    # Weights are about to be overwritten: skip the random initialisation (seconds for the official cascade).
    with torch.device("meta"):
        model = BUILDERS[builder](**kwargs)
    return model.to_empty(device="cpu")


def build(name: str) -> nn.Module:
    """Build the preset ``name`` with fresh (random) weights.

    Parameters
    ----------
    name
        One of :func:`available_models`.

    Returns
    -------
    torch.nn.Module
        The network, with ``preset``, ``patch_size``, ``valid_size``, ``in_channels``, ``out_channels`` attributes.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; available: {', '.join(available_models())}")
    row = PRESETS[name]
    model = _instantiate(row.builder, row.kwargs)
    model.preset = name
    return model


def _builder_name(model: nn.Module) -> str:
    for name, cls in BUILDERS.items():
        if type(model) is cls:
            return name
    raise ValueError(f"cannot save a {type(model).__name__}: only {sorted(BUILDERS)} networks are supported")


def _validate_card(card: Mapping[str, Any]) -> None:
    if card.get("task") not in TASKS:
        raise ValueError(f"model card 'task' must be one of {TASKS}, got {card.get('task')!r}")
    if card.get("normalisation") not in NORMALISATIONS:
        raise ValueError(
            f"model card 'normalisation' must be one of {NORMALISATIONS}, got {card.get('normalisation')!r}"
        )
    spacing = card.get("spacing_mm")
    if spacing is not None and not (isinstance(spacing, (int, float)) and spacing > 0):
        raise ValueError(f"model card 'spacing_mm' must be a positive number or None, got {spacing!r}")


def save(
    model: nn.Module, path: str | os.PathLike[str], *, dtype: torch.dtype | None = None, **metadata: Any
) -> dict[str, Any]:
    """Save ``model`` as one safetensors file whose header holds the JSON model card (key ``brainparc``).

    Parameters
    ----------
    model
        A :class:`BrainParcNet` or :class:`AutoStripNet` (its ``config`` is stored so :func:`load` can rebuild it).
    path
        Destination ``.safetensors`` file, written atomically.
    dtype
        Cast floating tensors to this dtype (``torch.float16`` halves the file); :func:`load` casts back to float32.
    **metadata
        Card fields: ``preset``, ``task``, ``spacing_mm``, ``normalisation``, ``labels``, ``training`` (dict), and any
        other JSON-serialisable entries. Missing fields default to the preset row's card.

    Returns
    -------
    dict
        The card as written, plus ``sha256`` of the file.
    """
    from brainparc import __version__

    preset = metadata.pop("preset", None) or getattr(model, "preset", None)
    defaults = dict(PRESETS[preset].card) if preset in PRESETS else {}
    card: dict[str, Any] = {"preset": preset, "version": __version__, "training": {}, **defaults, **metadata}
    card["arch"] = {"builder": _builder_name(model), "kwargs": model.config}
    card["dtype"] = str(dtype or torch.float32).removeprefix("torch.")
    _validate_card(card)
    write_safetensors(model.state_dict(), path, card, dtype=dtype)
    return {**card, "sha256": sha256_file(path)}


def bundled_atlas_entry() -> dict[str, str]:
    """The model-card entry naming the bundled atlas (:mod:`brainparc.atlas`): name and sha256."""
    from brainparc.atlas import load_atlas

    atlas = load_atlas()
    return {"name": atlas.name, "sha256": atlas.sha256}


def attach_bundled_atlas(model: AtlasGuidedNet, entry: Mapping[str, Any] | None = None) -> None:
    """Attach the bundled atlas to ``model``; with a card ``entry``, refuse an atlas other than the one it names."""
    from brainparc.atlas import load_atlas

    atlas = load_atlas()
    if entry is not None and entry.get("sha256") != atlas.sha256:
        raise CheckpointError(
            f"these weights were trained with atlas {entry.get('name')} (sha256 {str(entry.get('sha256'))[:12]}), "
            f"but this installation bundles {atlas.name} (sha256 {atlas.sha256[:12]})"
        )
    model.attach_atlas(atlas.prob, atlas.affine)


def _atlas_only() -> tuple[nn.Module, dict[str, Any]]:
    """Atlas-only mode: :class:`AtlasPriorNet` with the bundled atlas, and its card."""
    from brainparc import __version__, labels

    model = AtlasPriorNet(labels.dk_struct().tissue_of)
    attach_bundled_atlas(model)
    entry = bundled_atlas_entry()
    card = {"preset": "atlas-only", "version": __version__, **_PARC_CARD, "spacing_mm": 1.0,
            "normalisation": "in-mask-zscore", "atlas": entry, "status": "final", "sha256": entry["sha256"],
            "inference": {"overlap": 0.0, "cpu_amp": False},  # a deterministic prior: windows tile, nothing to blend
            "source": "bundled", "training": {"note": "no network: the warped atlas prior's argmax"}}  # fmt: skip
    return model.eval(), card


def _official_card(preset: str) -> dict[str, Any]:
    from brainparc import __version__

    card = {"preset": preset, "version": __version__, **PRESETS[preset].card}
    card["training"] = {"origin": "official BrainParc/AutoStrip release (authors' weights)"}
    return card


def _resolve(path_or_name: str | os.PathLike[str]) -> tuple[Path, str]:
    path = Path(path_or_name)
    if path.is_file():
        return path, "file"
    name = str(path_or_name)
    looks_like_name = name == "default" or name in PRESETS or (os.sep not in name and not path.suffix)
    if looks_like_name:
        bundled = bundled_path(name)
        if bundled.is_file():
            return bundled, "bundled"
        raise ModelNotFoundError(missing_bundled_message(name))
    raise ModelNotFoundError(f"Model file not found: {path}. Pass --model PATH to an existing weight file.")


def load(path_or_name: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load weights and return ``(model in eval mode, card)``.

    Parameters
    ----------
    path_or_name
        A brainparc ``.safetensors`` file; an official ``BrainParc.pth(.gz)`` / ``AutoStrip_Full.pth(.gz)``
        (plain or gzip-compressed ``torch.save``, with or without ``module.``); or a bundled name (a preset name looked
        up as ``brainparc/models/weights/<name>.safetensors``, or ``"default"``: the bundled parcellation model).
        Weights whose card has ``status: preliminary`` load with a logged warning (its ``training.note``).
        ``"atlas"`` (:data:`ATLAS_ONLY`) gives atlas-only mode: :class:`AtlasPriorNet` and the bundled atlas.

    Returns
    -------
    model, card
        ``card`` has the keys of ``docs/CONTRACTS.md`` plus ``sha256`` (of the file) and ``source``
        (``bundled`` | ``file`` | ``official``).

    Raises
    ------
    ModelNotFoundError
        Missing file, or bundled weights not installed.
    CheckpointError
        Unreadable or unsafe file, or weights that do not match the network exactly.
    """
    if str(path_or_name) == ATLAS_ONLY:
        return _atlas_only()
    path, source = _resolve(path_or_name)
    if is_safetensors(path):
        state, card = read_safetensors(path)
        arch = card.get("arch") or {}
        if arch.get("builder") in BUILDERS:
            model = _instantiate(arch["builder"], arch.get("kwargs", {}), empty=True)
        elif card.get("preset") in PRESETS:
            row = PRESETS[card["preset"]]
            model = _instantiate(row.builder, row.kwargs, empty=True)
        else:
            raise CheckpointError(f"{path}: the card names neither a known builder nor a known preset")
    else:
        state = read_official_state_dict(path)
        preset = infer_official_preset(state)
        row = PRESETS[preset]
        model = _instantiate(row.builder, row.kwargs, empty=True)
        card, source = _official_card(preset), "official"
    load_state_dict_strict(model, state, what=str(path))
    if isinstance(model, AtlasGuidedNet):
        attach_bundled_atlas(model, card.get("atlas"))
    model.preset = card.get("preset")
    card.update(sha256=sha256_file(path), source=source)
    if card.get("status") == "preliminary":
        note = (card.get("training") or {}).get("note", "")
        LOGGER.warning("%s (%s) are preliminary weights. %s", path.name, card.get("preset"), note)
    return model.eval(), card
