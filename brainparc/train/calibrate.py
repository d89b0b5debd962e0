"""Class-bias calibration of a trained atlas-guided cascade: one log-offset per class, fitted with the network frozen.

The cascade trains on Dice + focal losses with per-class weights, which reward every one of the 62 cortical parcels as
much as the one cerebral white matter class: the trained network over-calls small classes at the big ones' expense
(the first v2 weights called ~340 cm³ of cortex and ~80 cm³ of white matter per hemisphere on held-out adults). A
per-class offset ``b`` on the combined log-probabilities, ``p ∝ p_net · prior^w · exp(b)``, fitted by partial-label
negative log-likelihood on training windows, is the classic prior-shift correction: it moves decision boundaries
between classes without touching the network. The offsets ride in the model card (``calibration``) and
:func:`brainparc.models.load` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from brainparc.train.labelsets import IGNORE

__all__ = ["Calibration", "collect_log_probs", "fit_class_offsets", "pooled_dice"]


@dataclass(frozen=True)
class Calibration:
    """Fitted class log-offsets and the partial-label NLL (nats per voxel) before and after."""

    offsets: np.ndarray
    nll_before: float
    nll_after: float
    voxels: int


@torch.inference_mode()
def collect_log_probs(
    model: nn.Module, items: Iterable[dict], valid_size: int, stride: int = 2
) -> tuple[Tensor, Tensor]:
    """The model's combined log-probabilities (``parc_s``) and group targets of every ``stride``-th valid voxel.

    ``items`` are :class:`~brainparc.train.data.PatchDataset` items (``image [C, P, P, P]``, ``target [P, P, P]``);
    voxels whose target is ``IGNORE`` are dropped. Returns float16 ``[N, 107]`` and int64 ``[N]``.
    """
    logps, groups = [], []
    for item in items:
        out = model(item["image"][None].float(), parc_b=False)[4][0].float()  # [C, V, V, V]
        p = item["target"].shape[-1]
        lo = (p - valid_size) // 2
        target = item["target"][lo : lo + valid_size, lo : lo + valid_size, lo : lo + valid_size]
        sub = (slice(None, None, stride),) * 3
        t = target[sub].reshape(-1)
        lp = torch.log(out[(slice(None), *sub)].clamp_min(1e-6)).reshape(out.shape[0], -1).T
        keep = t != IGNORE
        logps.append(lp[keep].half())
        groups.append(t[keep].long())
    return torch.cat(logps), torch.cat(groups)


def _nll(logp: Tensor, groups: Tensor, log_grouping: Tensor, offsets: Tensor, chunk: int = 1 << 16) -> Tensor:
    """Mean partial-label NLL: −log Σ_{c ∈ group} softmax(logp + offsets)_c."""
    total = logp.new_zeros((), dtype=torch.float32)
    for s in range(0, logp.shape[0], chunk):
        z = logp[s : s + chunk].float() + offsets
        in_group = torch.logsumexp(z + log_grouping[groups[s : s + chunk]], dim=1)
        total = total + (torch.logsumexp(z, dim=1) - in_group).sum()
    return total / logp.shape[0]


def fit_class_offsets(
    logp: Tensor, groups: Tensor, grouping: np.ndarray | Tensor, iterations: int = 60, l2: float = 1e-3
) -> Calibration:
    """Per-class log-offsets minimising the partial-label NLL of ``logp`` (``[N, C]``) against ``groups`` (``[N]``).

    ``grouping`` is the registry's group × class 0/1 matrix (a voxel labelled "any left cortical parcel" counts for
    the mass of all of them). A small L2 penalty keeps classes no voxel supports at 0. L-BFGS, full batch.
    """
    log_grouping = torch.log(torch.as_tensor(np.asarray(grouping), dtype=torch.float32))  # -inf off the group
    offsets = torch.zeros(logp.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([offsets], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _nll(logp, groups, log_grouping, offsets) + l2 * (offsets**2).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(_nll(logp, groups, log_grouping, torch.zeros(logp.shape[1])))
    opt.step(closure)
    with torch.no_grad():
        fitted = offsets.detach() - offsets.detach()[0]  # softmax is shift-invariant: background's offset is 0
        after = float(_nll(logp, groups, log_grouping, fitted))
    return Calibration(fitted.numpy().astype(np.float32), before, after, int(logp.shape[0]))


def pooled_dice(logp: Tensor, groups: Tensor, class_of_group: np.ndarray, offsets: np.ndarray | None = None) -> float:
    """Mean Dice over the classes present, pooled over all voxels whose group is a single class (argmax labels)."""
    cls = torch.as_tensor(class_of_group)[groups]
    keep = cls >= 0
    z = logp[keep].float() + (0 if offsets is None else torch.as_tensor(offsets))
    pred, truth = z.argmax(1), cls[keep]
    scores = []
    for c in torch.unique(truth).tolist():
        a, b = pred == c, truth == c
        scores.append(2 * float((a & b).sum()) / float(a.sum() + b.sum()))
    return float(np.mean(scores)) if scores else float("nan")
