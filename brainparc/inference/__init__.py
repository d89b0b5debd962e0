"""Sliding-window inference: window geometry and blending, devices, and the network predictors.

Importing this package imports torch (``import brainparc`` alone does not).
"""

from brainparc.inference.devices import autocast, deterministic, resolve_device, run_with_cpu_fallback, set_threads
from brainparc.inference.predictor import ParcellationResult, predict_brain_mask, predict_parcellation
from brainparc.inference.sliding_window import (
    Reduced,
    blend_weights,
    official_window_starts,
    plan_windows,
    sliding_window,
    window_starts,
)

__all__ = [
    "ParcellationResult",
    "Reduced",
    "autocast",
    "blend_weights",
    "deterministic",
    "official_window_starts",
    "plan_windows",
    "predict_brain_mask",
    "predict_parcellation",
    "resolve_device",
    "run_with_cpu_fallback",
    "set_threads",
    "sliding_window",
    "window_starts",
]
