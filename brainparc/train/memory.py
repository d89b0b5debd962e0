"""Activation (gradient) checkpointing of the BrainParc/AutoStrip blocks without touching their state-dict keys.

:func:`enable_grad_checkpointing` replaces, on each selected block *instance*, ``forward`` by a wrapper that runs the
original forward under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant).  Module names, parameters and
buffers are unchanged, so checkpoints and exported weights are identical with or without it.  Activations inside a
block are recomputed during the backward pass instead of being stored: for ``brainparc-official`` at batch 1 this is
what brings a 160³ training step within a 24 GB GPU (measure with ``benchmarks/train_step.py --grad-checkpoint``).

Batch normalisation in training mode updates its running statistics on every forward, so a naive recomputation would
update them twice; the recompute context saves and restores the running statistics of the block's norm layers, so
the result is bit-identical to the plain forward (tested).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CHECKPOINTED_BLOCKS", "enable_grad_checkpointing"]

#: Block classes wrapped by default: every transition, the CBAM fusions, the bottleneck, the AutoStrip fusions.
CHECKPOINTED_BLOCKS = (
    "InputTransition",
    "DownTransition",
    "UpTransition",
    "CBAMBlock",
    "ResidualBlock",
    "BasicBlock",
    "OutputTransition",
)


@contextlib.contextmanager
def _frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of ``module``'s batch-norm layers on exit (used for the recomputation)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in norms
        if m.running_mean is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, n in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)


def _wrap(module: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
    def context_fn() -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
        return contextlib.nullcontext(), _frozen_running_stats(module)

    @functools.wraps(forward)
    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not (torch.is_grad_enabled() and module.training):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, context_fn=context_fn, **kwargs)

    return checkpointed


def enable_grad_checkpointing(model: nn.Module, block_types: tuple[str, ...] = CHECKPOINTED_BLOCKS) -> int:
    """Checkpoint every outermost block of ``model`` whose class name is in ``block_types``; return how many.

    Nested blocks inside a wrapped one are not wrapped again.  Inference (``torch.no_grad``/eval mode) runs the plain
    forward.  The wrapper lives on the instance (``module.forward``), so it is not part of the state dict.
    """
    wrapped: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        if getattr(m, "_brainparc_checkpointed", False):
            return
        if type(m).__name__ in block_types:
            m.forward = _wrap(m, m.forward)  # type: ignore[method-assign]
            m._brainparc_checkpointed = True  # type: ignore[assignment]
            wrapped.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return len(wrapped)
