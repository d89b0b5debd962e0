"""Weight files: the official ``.pth(.gz)`` checkpoints and our safetensors files with a JSON model card.

This module knows file formats only; the preset registry and model building live in :mod:`brainparc.models`.
Nothing here ever unpickles arbitrary objects: official files go through ``torch.load(weights_only=True)`` and our
own files are safetensors (tensors + a JSON string header).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from brainparc.outputs import publish

#: Header-metadata key that holds the JSON model card in our safetensors files.
CARD_KEY = "brainparc"
#: Where bundled weights live: ``weights/<name>.safetensors``.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The bundled default models (the command line's ``--model default``); the bare name ``default`` in
#: :func:`bundled_path` means the first, the parcellation model. No skull-stripping network: the registered template
#: mask beat the bundled ``autostrip-lite`` on every reference mask (docs/models.md); it stays bundled, opt-in.
DEFAULT_MODELS = ("brainparc-atlas",)
#: Official stage prefixes: their presence identifies a BrainParc (BT_Joint) checkpoint.
BRAINPARC_STAGES = ("Boundary.", "Tissue.", "Parc.")

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A weight file cannot be used: unreadable, unsafe (code-executing pickle) or not matching the network."""


class ModelNotFoundError(FileNotFoundError):
    """No weights at the requested path or under the requested bundled name."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_path(name: str) -> Path:
    """Path of the bundled weights called ``name`` (``default``: the default parcellation model; may not exist)."""
    return WEIGHTS_DIR / f"{DEFAULT_MODELS[0] if name == 'default' else name}.safetensors"


def missing_bundled_message(name: str) -> str:
    """The user-facing explanation raised when bundled weights are not installed."""
    return (
        f"No bundled weights named {name!r} are installed (looked for {bundled_path(name)}). "
        "Pass --model PATH with either a brainparc .safetensors file or the official BrainParc.pth.gz / "
        "AutoStrip_Full.pth.gz downloaded yourself from the Google Drive link in the BrainParc / AutoStrip README "
        "(brainparc never downloads weights at run time)."
    )


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like a safetensors file (u64 little-endian header length, then ``{``)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len < os.path.getsize(path)


# --- official checkpoints ---------------------------------------------------------------------------------------------


def _torch_load(path: str | os.PathLike[str], source: str | os.PathLike[str], allow_mmap: bool = True) -> object:
    with open(path, "rb") as fh:
        zipped = fh.read(4) == _ZIP_MAGIC
    try:  # mmap (zip format only) avoids holding a second 1.1 GB copy of the official weights in memory
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped and allow_mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refusing to load {source}: it is not a plain tensor checkpoint. Its pickle would need to create "
            "Python objects or call code, which can execute arbitrary commands, so it was rejected "
            f"(torch.load weights_only=True). Use the official weights or a brainparc .safetensors file. Detail: {exc}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"Cannot read {source} as a PyTorch checkpoint: {exc}") from exc


def _as_state_dict(obj: object, source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and len(obj) == 1:
        (only,) = obj.values()
        if isinstance(only, Mapping):  # {"state_dict": {...}} / {"model": {...}} wrappers
            obj = only
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} does not contain a state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in obj.items()}


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` / DDP checkpoints carry (AutoStrip's official file)."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def read_official_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read an official ``BrainParc.pth(.gz)`` / ``AutoStrip_Full.pth(.gz)`` state dict onto the CPU.

    The official ``.pth.gz`` files are plain ``torch.save`` output despite the name; real gzip is detected by its
    magic bytes (``1f 8b``) and decompressed to a temporary file first. Loading uses ``weights_only=True``: a file whose
    pickle would execute code raises :class:`CheckpointError`. The ``module.`` prefix is removed.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == _GZIP_MAGIC
    if not gzipped:
        return strip_module_prefix(_as_state_dict(_torch_load(path, path), path))
    fd, tmp = tempfile.mkstemp(suffix=".pth", prefix="brainparc-ckpt-")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 20)
        state = _torch_load(tmp, path, allow_mmap=False)  # read fully so the temporary file can go at once
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CheckpointError(f"Cannot decompress {path}: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return strip_module_prefix(_as_state_dict(state, path))


def infer_official_preset(keys: Iterable[str]) -> str:
    """``"brainparc-official"`` when any key starts with a cascade stage prefix, else ``"autostrip-official"``."""
    return "brainparc-official" if any(k.startswith(BRAINPARC_STAGES) for k in keys) else "autostrip-official"


def _preview(items: list[str], n: int = 5) -> str:
    more = f", … (+{len(items) - n})" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the model's keys and shapes.

    Strict by design: a silent ``strict=False`` would run a half-initialised network. The message lists a few
    missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"{what} does not match the network ({len(expected)} entries expected, {len(state_dict)} found)"]
        if missing:
            parts.append(f"{len(missing)} missing: {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_preview(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} with another shape: {_preview(shapes, 3)}")
        raise CheckpointError("; ".join(parts))


def load_state_dict_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str = "checkpoint"
) -> None:
    """Check with :func:`check_state_dict`, then copy the tensors into ``model`` (cast to the model's dtypes)."""
    check_state_dict(model, state_dict, what=what)
    model.load_state_dict(state_dict, strict=True)


# --- our format: safetensors + JSON card ---------------------------------------------------------------------------


def write_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    card: Mapping[str, object],
    dtype: torch.dtype | None = None,
) -> None:
    """Write ``state_dict`` with ``card`` (JSON, header key ``brainparc``) atomically to ``path``.

    Floating tensors are cast to ``dtype`` when given (e.g. ``torch.float16`` for small bundled files); integer
    buffers (``num_batches_tracked``) keep their dtype. The file is written to a temporary name in the same folder
    and moved into place with ``os.replace``, so readers never see a partial file.
    """
    from safetensors.torch import save_file

    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
        publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Read our safetensors file: ``(state_dict in float32, card)``; CheckpointError when the card is absent."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"Cannot read {path} as safetensors: {exc}") from exc
    if CARD_KEY not in metadata:
        raise CheckpointError(f"{path} has no brainparc model card (header metadata key {CARD_KEY!r})")
    try:
        card = json.loads(metadata[CARD_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the model card is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: the model card must be a JSON object")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return tensors, card
