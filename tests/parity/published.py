"""Harness around the published BrainParc and AutoStrip inference scripts in ``../shared/reference`` (never copied).

The scripts are imported from their files and run as published, on the CPU: their networks are built from their own
classes and given our weights; ``args`` carries their command-line defaults with ``device="cpu"``. Only two things
are patched, both outside their algorithms: ``IPython`` (imported for an unused ``embed``) is stubbed when it is not
installed, and their ``_get_pred`` is wrapped so that the blended sums it returns are kept for comparison.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.conftest import SHARED_DATA

#: The published code: ``BRAINPARC_SHARED_REFERENCE``, else next to the shared data (``../shared/reference``).
REFERENCE = Path(os.environ.get("BRAINPARC_SHARED_REFERENCE", SHARED_DATA.parent / "reference"))
BRAINPARC_SCRIPT = REFERENCE / "BrainParc" / "Code" / "Inference" / "Step02_BrainParc.py"
AUTOSTRIP_SCRIPT = REFERENCE / "AutoStrip" / "Code" / "Inference" / "Step02_AutoStrip_Skull_Stripping.py"


def load_script(path: Path, name: str) -> types.ModuleType:
    """Import one published script as a module (its ``__main__`` block does not run)."""
    if "IPython" not in sys.modules and importlib.util.find_spec("IPython") is None:
        sys.modules["IPython"] = types.SimpleNamespace(embed=lambda *a, **k: None)  # type: ignore[assignment]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def brainparc_args(**overrides: Any) -> types.SimpleNamespace:
    """``Step02_BrainParc.py``'s argparse defaults, on the CPU."""
    args = {
        "num_classes": 106,
        "num_modalities": 2,
        "device": "cpu",
        "norm_orientation": 1,
        "norm_spacing": 1,
        "standard_space": [0.8, 0.8, 0.8],
        "crop_size": (160, 160, 160),
        "overlap_ratio": 0.5,
    }
    return types.SimpleNamespace(**{**args, **overrides})


def autostrip_args(**overrides: Any) -> types.SimpleNamespace:
    """``Step02_AutoStrip_Skull_Stripping.py``'s argparse defaults, on the CPU."""
    args = {
        "num_classes": 1,
        "num_modalities": 1,
        "device": "cpu",
        "crop_size": (160, 160, 160),
        "overlap_ratio": 0.5,
        "norm_orientation": 0,
        "norm_spacing": 0,
        "standard_spacing": (1, 1, 1),
    }
    return types.SimpleNamespace(**{**args, **overrides})


def published_network(module: types.ModuleType, kind: str, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The published network class with ``state_dict`` loaded strictly, in eval mode on the CPU."""
    net = module.BT_Joint(2, 107) if kind == "brainparc" else module.SegNetMultiScale(1, 2, norm="IBNa")
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def capture_get_pred(module: types.ModuleType) -> list[Any]:
    """Wrap the script's ``_get_pred`` so that every result is appended to the returned list."""
    seen: list[Any] = []
    original = module._get_pred

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        seen.append(out)
        return out

    module._get_pred = wrapped
    return seen


def brainparc_weight_sum(
    module: types.ModuleType, shape: tuple[int, int, int], args: types.SimpleNamespace
) -> np.ndarray:
    """The sum of the Hann weights the published ``_get_pred`` gives each voxel (it never divides by it)."""
    pad = 32
    padded = tuple(s + 2 * pad for s in shape)
    hann = module.get_3d_hann_window(args.crop_size).numpy().astype(np.float64)
    valid = torch.nn.ConstantPad3d(pad, 0)(torch.ones((1, 1, 96, 96, 96)))[0, 0].numpy()
    total = np.zeros(padded)
    for x, y, z in module.calculate_patch_index(padded, args.crop_size, overlap_ratio=args.overlap_ratio):
        total[x : x + 160, y : y + 160, z : z + 160] += hann * valid
    return total[pad:-pad, pad:-pad, pad:-pad]
