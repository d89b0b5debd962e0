"""Tissue probabilities as sums of parcel probabilities, so the tissue map and the parcellation agree.

Every BrainParc class has one tissue class (background, CSF, GM, WM; ``labels.dk_struct().tissue_of``), and the
official tissue maps are exactly that aggregation of the official parcellations (≥ 0.993 Dice per tissue class on the
BrainParc samples). Summing a network's parcel probabilities per tissue class gives a tissue map that can never
contradict its parcellation, which a separately trained tissue head can (docs/recipes.md, ``tissue``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TissueFromParcels", "parcel_tissue", "tissue_matrix"]

#: Output positions in the cascade's 6-tuple (docs/CONTRACTS.md).
_TISSUE_S, _PARC_S = 2, 4


def parcel_tissue(parc: torch.Tensor, tissue_matrix: torch.Tensor) -> torch.Tensor:
    """``parc[B, C, ...]`` summed into ``[B, 4, ...]`` by the one-hot class → tissue matrix ``[C, 4]``."""
    return torch.einsum("bc...,ct->bt...", parc, tissue_matrix.to(parc.dtype))


def tissue_matrix(tissue_of_class: Sequence[int]) -> torch.Tensor:
    """One-hot ``[C, 4]`` float matrix of each class's tissue."""
    return F.one_hot(torch.as_tensor(list(tissue_of_class), dtype=torch.long), 4).float()


class TissueFromParcels(nn.Module):
    """Wraps a cascade so its ``tissue_s`` output is :func:`parcel_tissue` of its ``parc_s`` output (inference only).

    The wrapped model's geometry attributes (``patch_size``, ``valid_size``, ``in_channels``...) are read through.
    """

    def __init__(self, model: nn.Module, tissue_of_class: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("class_to_tissue", tissue_matrix(tissue_of_class), persistent=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, x: torch.Tensor, parc_b: bool = True) -> tuple[torch.Tensor | None, ...]:
        """The wrapped model's 6-tuple with ``tissue_s`` replaced by the tissue sums of ``parc_s``."""
        out = list(self.model(x, parc_b))
        out[_TISSUE_S] = parcel_tissue(out[_PARC_S], self.class_to_tissue)
        return tuple(out)
