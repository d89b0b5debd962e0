"""Small fake networks that follow the models contract (docs/CONTRACTS.md) without depending on brainparc.models."""

from __future__ import annotations

import torch
from torch import nn


def centre(x: torch.Tensor, patch_size: int, valid_size: int) -> torch.Tensor:
    """The centred valid region of a ``[B, C, P, P, P]`` batch."""
    o = (patch_size - valid_size) // 2
    return x[:, :, o : o + valid_size, o : o + valid_size, o : o + valid_size]


class FakeCascade(nn.Module):
    """BrainParc-shaped cascade whose outputs at a voxel depend only on that voxel's intensity.

    Tissue class k wins where the intensity is nearest ``TISSUE_CENTRES[k]``; parcel k where it is nearest ``k / 10``.
    Blending identical per-voxel values therefore reconstructs them, so expected maps are known in closed form.
    """

    TISSUE_CENTRES = torch.tensor([0.0, 1.0, 2.0, 3.0])

    def __init__(self, patch_size: int = 24, valid_size: int = 16, n_parcels: int = 107):
        super().__init__()
        self.patch_size, self.valid_size = patch_size, valid_size
        self.in_channels, self.out_channels = 2, n_parcels
        self.n_parcels = n_parcels
        self.calls = 0
        self.training_flags: list[bool] = []
        self.register_buffer("dummy", torch.zeros(1))

    def forward(self, x: torch.Tensor, parc_b: bool = True) -> tuple[torch.Tensor | None, ...]:
        self.calls += 1
        self.training_flags.append(self.training)
        assert x.shape[1:] == (2, self.patch_size, self.patch_size, self.patch_size)
        v = centre(x, self.patch_size, self.valid_size)[:, :1]
        tissue = torch.softmax(-8 * (v - self.TISSUE_CENTRES.view(1, -1, 1, 1, 1)) ** 2, dim=1)
        parc_centres = torch.arange(self.n_parcels, dtype=x.dtype).view(1, -1, 1, 1, 1) / 10
        parc = torch.softmax(-400 * (v - parc_centres) ** 2, dim=1)
        boundary = torch.sigmoid(v.expand(-1, 4, -1, -1, -1))
        return boundary, boundary, tissue, torch.zeros_like(tissue), parc, (torch.zeros_like(parc) if parc_b else None)


class FakeAutoStrip(nn.Module):
    """AutoStrip-shaped network: brain probability = sigmoid(intensity) at each voxel."""

    def __init__(self, patch_size: int = 24, valid_size: int = 20):
        super().__init__()
        self.patch_size, self.valid_size = patch_size, valid_size
        self.in_channels, self.out_channels = 1, 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = centre(x, self.patch_size, self.valid_size)
        p = torch.sigmoid(v)
        s = torch.cat([1 - p, p], dim=1)
        return s, s
