"""Atlas-guided BrainParc: the cascade refines a warped probabilistic atlas instead of starting from nothing.

Inputs are the cascade's two image channels plus the template coordinates of every voxel (three channels, mm; from
the pipeline's one template registration). The cascade (:class:`~brainparc.models.brainparc_net.BrainParcNet`) sees the
image and the coordinates (scaled to ~[-1, 1]); its parcel probabilities are combined with the atlas prior sampled at
the same coordinates as a product of experts::

    p(class) ∝ p_net(class) · prior(class) ** w        (w learnt, starts at 1)

so an untrained cascade (uniform output) gives the atlas-only answer on the small branch (``parc_s``, the output
inference reads; ``parc_b`` stays the cascade's own deep-supervision output), and training only has to learn where
the image disagrees with the prior: which voxels are cortex, white matter, CSF, and where subcortical boundaries
really lie. That is what makes a small network on small windows train on a CPU in hours, not weeks. Boundary and
tissue outputs are the cascade's own.

The atlas is not part of the weights file (a non-persistent buffer): the model card names it with its sha256, and
:func:`brainparc.models.load` attaches the bundled atlas after checking that hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .blocks import to_jsonable
from .brainparc_net import BrainParcNet
from .tissue import parcel_tissue, tissue_matrix

#: Template coordinates are divided by this before the network sees them (the MNI brain spans about ±100 mm).
COORD_SCALE = 100.0
#: Image channels before the three coordinate channels.
IMAGE_CHANNELS = 2


class AtlasGuidedNet(nn.Module):
    """BrainParc cascade × warped atlas prior (module docstring); ``forward`` returns the cascade's 6-tuple.

    Parameters
    ----------
    image_channels
        Channels before the three coordinate channels (2: intensity, edge).
    **cascade
        Keywords of :class:`BrainParcNet` (widths, depths, geometry, heads).
    """

    def __init__(self, image_channels: int = IMAGE_CHANNELS, **cascade: Any) -> None:
        super().__init__()
        self.net = BrainParcNet(in_channels=image_channels + 3, **cascade)
        self.prior_weight = nn.Parameter(torch.ones(()))
        self.register_buffer("atlas", torch.zeros(0), persistent=False)
        self.atlas_affine: np.ndarray | None = None
        self.image_channels = image_channels
        self.in_channels = image_channels + 3
        self.out_channels = self.net.out_channels
        self.patch_size, self.valid_size = self.net.patch_size, self.net.valid_size
        self.preset: str | None = None
        self.config = to_jsonable(dict(image_channels=image_channels, **cascade))

    def attach_atlas(self, prob: np.ndarray, affine: np.ndarray) -> None:
        """Use the atlas ``prob`` (``[C, I, J, K]``) on the grid of ``affine`` as the prior."""
        if prob.shape[0] != self.out_channels:
            raise ValueError(f"atlas has {prob.shape[0]} classes, the network {self.out_channels}")
        self.atlas = torch.as_tensor(prob, dtype=torch.float32, device=self.atlas.device)
        self.atlas_affine = np.asarray(affine, dtype=np.float64)

    def prior(self, coords: torch.Tensor) -> torch.Tensor:
        """Atlas probabilities ``[B, C, ...]`` at template coordinates ``coords`` (``[B, 3, ...]``, mm)."""
        from brainparc.atlas import warp_atlas

        if self.atlas.numel() == 0 or self.atlas_affine is None:
            raise RuntimeError("no atlas attached: load the model with brainparc.models.load or call attach_atlas")
        return warp_atlas(self.atlas, self.atlas_affine, coords)

    def _combine(self, p_net: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        # in place on fresh tensors: each 107-channel temporary costs a pass over memory per window (same values and
        # gradients as the out-of-place expression)
        log_prior = self.prior(coords).clamp_min_(1e-6).log_()
        logits = p_net.float().clamp_min(1e-6).log_().add_(log_prior.mul_(self.prior_weight))
        return torch.softmax(logits, dim=1).to(p_net.dtype)

    def forward(self, x: torch.Tensor, parc_b: bool = True) -> tuple[torch.Tensor | None, ...]:
        """``x[B, image_channels + 3, P, P, P]`` → ``(boundary_s, boundary_b, tissue_s, tissue_b, parc_s, parc_b)``."""
        from brainparc.core.skullstrip import OUTSIDE_TEMPLATE

        image, coords = x[:, : self.image_channels], x[:, self.image_channels :].float()
        inside = coords[:, :1] > OUTSIDE_TEMPLATE / 2
        features = torch.where(inside, coords / COORD_SCALE, torch.zeros_like(coords))
        bnd_s, bnd_b, tis_s, tis_b, par_s, par_b = self.net(torch.cat([image, features.to(image.dtype)], 1), parc_b)
        p, v = self.patch_size, self.valid_size
        lo = (p - v) // 2
        par_s = self._combine(par_s, coords[:, :, lo : lo + v, lo : lo + v, lo : lo + v])
        # parc_b stays the cascade's own answer (a deep-supervision output, never used at inference): combining it
        # too would double the 107-channel work that dominates a CPU training step
        return bnd_s, bnd_b, tis_s, tis_b, par_s, par_b


def atlas_guided_kwargs(
    widths: Sequence[int], res_depths: Sequence[int], bottleneck_depth: int, patch_size: int, valid_size: int
) -> Mapping[str, Any]:
    """Preset keywords of an atlas-guided cascade with the exact fusion field of view and a 1×1 head."""
    return dict(widths=tuple(widths), res_depths=tuple(res_depths), bottleneck_depth=bottleneck_depth,
                patch_size=patch_size, valid_size=valid_size, fusion_crops=None, head_kernel_size=1,
                head_hidden=2 * widths[0])  # fmt: skip


class AtlasPriorNet(nn.Module):
    """Atlas-only "network": the warped prior itself, in the cascade's output format (``--model atlas``).

    No weights: the parcel output is the atlas prior at the window's template coordinates, the tissue output its sum
    per tissue class, the boundary output empty. It runs through the same sliding window as the cascade, so atlas-only
    mode is the floor every trained model is compared with, computed the same way.
    """

    def __init__(self, tissue_of_class: Sequence[int], patch_size: int = 96, valid_size: int = 96) -> None:
        super().__init__()
        self.register_buffer("atlas", torch.zeros(0), persistent=False)
        self.register_buffer("tissue_matrix", tissue_matrix(tissue_of_class), persistent=False)  # [107, 4]
        self.atlas_affine: np.ndarray | None = None
        self.image_channels, self.in_channels = IMAGE_CHANNELS, IMAGE_CHANNELS + 3
        self.out_channels = len(tissue_of_class)
        self.patch_size, self.valid_size = patch_size, valid_size
        self.preset: str | None = "atlas-only"
        self.config = {"patch_size": patch_size, "valid_size": valid_size}

    attach_atlas = AtlasGuidedNet.attach_atlas
    prior = AtlasGuidedNet.prior

    def forward(self, x: torch.Tensor, parc_b: bool = True) -> tuple[torch.Tensor | None, ...]:
        """``x[B, 5, P, P, P]`` → the 6-tuple of the cascade (boundary maps empty, ``parc_b`` = ``parc_s``)."""
        p, v = self.patch_size, self.valid_size
        lo = (p - v) // 2
        parc = self.prior(x[:, self.image_channels :, lo : lo + v, lo : lo + v, lo : lo + v].float())
        tissue = parcel_tissue(parc, self.tissue_matrix)
        empty = parc[:, :0]
        return empty, empty, tissue, tissue, parc, (parc if parc_b else None)
