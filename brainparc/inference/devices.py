"""Device selection, mixed precision, thread settings, determinism and the CUDA-OOM → CPU fallback."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["autocast", "deterministic", "resolve_device", "run_with_cpu_fallback", "set_threads"]

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a user device setting into a :class:`torch.device`.

    Parameters
    ----------
    spec : str or torch.device
        ``"auto"`` (CUDA device 0 when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    ValueError
        For an unknown spelling, or when CUDA (or device ``N``) is requested but not available: the message says
        what was found, so a user on a CPU-only machine knows to pass ``--device cpu``.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    match = _DEVICE_RE.match(str(spec).strip().lower())
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise ValueError(f"invalid device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r} requested but CUDA is not available (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda}); use --device cpu or --device auto"
        )
    n = torch.cuda.device_count()
    idx = int(index or 0)
    if idx >= n:
        raise ValueError(f"device {spec!r} requested but only {n} CUDA device(s) are visible")
    return torch.device("cuda", idx)


def autocast(device: torch.device | str, dtype: torch.dtype | None = None, enabled: bool | None = None):
    """Mixed-precision context for inference on ``device``.

    On CUDA it is on by default with bfloat16 where supported (else float16). On CPU it is off unless
    ``enabled=True`` (then bfloat16): CPU autocast is often slower than float32 and changes results.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast(...)`` or a null context.
    """
    device = torch.device(device)
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return contextlib.nullcontext()
    if dtype is None:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            dtype = torch.float16
        else:
            dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count (the ``--nthreads`` setting); ``None`` or 0 leaves it alone.

    Inter-op threads are also set when torch still allows it (only before the first parallel region).

    Returns
    -------
    int
        The previous intra-op thread count.
    """
    previous = torch.get_num_threads()
    if n is None or n == 0:
        return previous
    if n < 0:
        raise ValueError(f"number of threads must be positive, got {n}")
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # "cannot set number of interop threads after parallel work has started"
        torch.set_num_interop_threads(n)
    return previous


class deterministic:  # lower case like torch.set_grad_enabled: a call that can also be a context
    """Switch deterministic algorithms on or off; restores the previous state when used as a context manager.

    Applies immediately, like :class:`torch.set_grad_enabled`: ``deterministic(True)`` alone is a setting, while
    ``with deterministic(True): ...`` limits it to the block. Sets ``torch.use_deterministic_algorithms`` (in
    ``warn_only`` mode: ops without a deterministic kernel warn instead of failing), cuDNN ``deterministic`` and
    ``benchmark``, and ``CUBLAS_WORKSPACE_CONFIG`` when unset (needed for deterministic cuBLAS).
    """

    def __init__(self, flag: bool = True):
        self.previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        self._set_env = flag and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        if self._set_env:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(flag, warn_only=True)
        torch.backends.cudnn.deterministic = flag
        torch.backends.cudnn.benchmark = not flag

    def __enter__(self) -> deterministic:
        return self

    def __exit__(self, *exc: object) -> None:
        enabled, warn_only, cudnn_det, cudnn_bench = self.previous
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        if self._set_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def run_with_cpu_fallback(fn: Callable[[torch.device], T], device: torch.device | str) -> T:
    """Call ``fn(device)``; if it runs out of CUDA memory, warn and call ``fn(cpu)`` instead.

    Only :class:`torch.cuda.OutOfMemoryError` on a CUDA device triggers the fallback (habit 10, MONAI's
    ``SlidingWindowInfererAdapt``); every other error propagates. ``fn`` must be restartable: it is called again from
    scratch, so it should move the model to the device it is given.

    Examples
    --------
    >>> run_with_cpu_fallback(lambda dev: dev.type, "cpu")
    'cpu'
    """
    device = torch.device(device)
    try:
        return fn(device)
    except torch.cuda.OutOfMemoryError as err:
        if device.type != "cuda":
            raise
        message = f"CUDA out of memory on {device} ({str(err).splitlines()[0] if str(err) else 'no detail'}); "
        message += "rerunning on the CPU, which is much slower. Use a smaller --batch-size or a larger GPU."
    # Retry outside the except block: the exception's traceback holds frames that reference GPU tensors.
    LOGGER.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return fn(torch.device("cpu"))
