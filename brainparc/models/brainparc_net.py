"""BrainParc network: one dual-branch stage (:class:`BrainParcStage`) and the Boundary → Tissue → Parc cascade.

Clean-room reimplementation of ``SegNetMS_*`` / ``BT_Joint`` (reference §1.2–§1.5). Module names are the official
state-dict names; the number in a name (``down_32_s``, ``fusion_up_256`` ...) is the *official* channel width and is
used here as a level name only — the actual widths come from ``widths``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from .blocks import (
    Box,
    CBAMBlock,
    DownTransition,
    DualBranch,
    InputTransition,
    OutputTransition,
    ResidualBlock,
    UpTransition,
    check_geometry,
    check_positive_ints,
    resolve_crops,
    to_jsonable,
)

#: fusion site → resolution level (0 = valid_size³, 1 = valid_size/2 ³, ...).
FUSION_SITES: dict[str, int] = {
    "fusion_16": 0,
    "fusion_32": 1,
    "fusion_64": 2,
    "fusion_128": 3,
    "fusion_256": 4,
    "fusion_up_256": 3,
    "fusion_up_128": 2,
    "fusion_up_64": 1,
    "fusion_up_32": 0,
}

#: The integer crops of the official code (reference §1.3), including the [10:36, 10:38, 10:38] quirk at 48³.
OFFICIAL_FUSION_CROPS: dict[str, list[list[int]]] = {
    "fusion_16": [[20, 76]] * 3,
    "fusion_32": [[10, 36], [10, 38], [10, 38]],
    "fusion_64": [[5, 20]] * 3,
    "fusion_128": [[3, 9]] * 3,
    "fusion_256": [[1, 5]] * 3,
    "fusion_up_256": [[3, 9]] * 3,
    "fusion_up_128": [[5, 20]] * 3,
    "fusion_up_64": [[10, 38]] * 3,
    "fusion_up_32": [[20, 76]] * 3,
}

_DOWN = ("down_32", "down_64", "down_128", "down_256")
_UP = ("up_256", "up_128", "up_64", "up_32")


class BrainParcStage(DualBranch):
    """One dual-branch BrainParc stage (``SegNetMS_{Boundary,Tissue,Parc}``).

    The small branch sees the centre ``valid_size³`` of the patch at full resolution; the big branch sees the whole
    patch resized to ``valid_size³`` (trilinear, align_corners=False). At every scale the big-branch feature is
    cropped to the small branch's field of view, resized and fused into the small branch by a CBAM block. The
    bottleneck is one module shared by both branches.

    Parameters
    ----------
    in_channels, out_channels
        Channels of the concatenated input (image + extra maps) and of the head.
    head
        ``"sigmoid"`` (boundary stage) or ``"softmax"`` (tissue and parcellation stages).
    widths
        Five feature widths, level 0 … 4 (official: 16, 32, 64, 128, 256).
    res_depths
        Residual depths of the four down transitions (official: 4, 4, 4, 8); the up transitions mirror them.
    bottleneck_depth
        Depth of the shared bottleneck (official: 8).
    patch_size, valid_size
        Input window edge P and small-branch edge V (official: 160, 96).
    fusion_crops
        ``{fusion site: three (start, stop) pairs}`` in big-branch coordinates, or ``None`` for the exact field of
        view (:func:`~brainparc.models.blocks.exact_fov_box`).

    Examples
    --------
    >>> stage = BrainParcStage(2, 4, "sigmoid", widths=(2, 4, 4, 8, 8), res_depths=(1, 1, 1, 1),
    ...                        bottleneck_depth=1, patch_size=80, valid_size=48)
    >>> [t.shape[1:] for t in stage(torch.zeros(1, 2, 80, 80, 80))]
    [torch.Size([4, 48, 48, 48]), torch.Size([4, 48, 48, 48])]
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        head: Literal["sigmoid", "softmax"],
        *,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        res_depths: Sequence[int] = (4, 4, 4, 8),
        bottleneck_depth: int = 8,
        patch_size: int = 160,
        valid_size: int = 96,
        fusion_crops: Mapping[str, Sequence[Sequence[float]]] | None = None,
        head_kernel_size: int = 3,
        head_hidden: int | None = None,
    ) -> None:
        super().__init__()
        w = check_positive_ints("widths", widths, 5)
        d = check_positive_ints("res_depths", res_depths, 4)
        (bottleneck_depth,) = check_positive_ints("bottleneck_depth", (bottleneck_depth,), 1)
        check_positive_ints("in_channels/out_channels", (in_channels, out_channels), 2)
        check_geometry(patch_size, valid_size, levels=4)
        self.in_channels, self.out_channels, self.head = in_channels, out_channels, head
        self.widths, self.res_depths, self.bottleneck_depth = w, d, bottleneck_depth
        self.patch_size, self.valid_size = patch_size, valid_size
        self.crops: dict[str, Box] = resolve_crops(FUSION_SITES, fusion_crops, patch_size, valid_size)

        self.in_tr_s = InputTransition(in_channels, w[0])
        self.in_tr_b = InputTransition(in_channels, w[0])
        self.fusion_16 = CBAMBlock(2 * w[0], w[0])
        self.down_32_s = DownTransition(w[0], w[1], d[0])
        self.down_32_b = DownTransition(w[0], w[1], d[0])
        self.fusion_32 = CBAMBlock(2 * w[1], w[1])
        self.down_64_s = DownTransition(w[1], w[2], d[1])
        self.down_64_b = DownTransition(w[1], w[2], d[1])
        self.fusion_64 = CBAMBlock(2 * w[2], w[2])
        self.down_128_s = DownTransition(w[2], w[3], d[2])
        self.down_128_b = DownTransition(w[2], w[3], d[2])
        self.fusion_128 = CBAMBlock(2 * w[3], w[3])
        self.down_256_s = DownTransition(w[3], w[4], d[3])
        self.down_256_b = DownTransition(w[3], w[4], d[3])
        self.fusion_256 = CBAMBlock(2 * w[4], w[4])
        self.bottleneck = ResidualBlock(w[4], bottleneck_depth)
        # Up path: conv to the skip width, concat the skip → 2 × skip width (official: 256, 128, 64, 32).
        self.up_256_s = UpTransition(w[4], w[3], d[3])
        self.up_256_b = UpTransition(w[4], w[3], d[3])
        self.fusion_up_256 = CBAMBlock(4 * w[3], 2 * w[3])
        self.up_128_s = UpTransition(2 * w[3], w[2], d[2])
        self.up_128_b = UpTransition(2 * w[3], w[2], d[2])
        self.fusion_up_128 = CBAMBlock(4 * w[2], 2 * w[2])
        self.up_64_s = UpTransition(2 * w[2], w[1], d[1])
        self.up_64_b = UpTransition(2 * w[2], w[1], d[1])
        self.fusion_up_64 = CBAMBlock(4 * w[1], 2 * w[1])
        self.up_32_s = UpTransition(2 * w[1], w[0], d[0])
        self.up_32_b = UpTransition(2 * w[1], w[0], d[0])
        self.fusion_up_32 = CBAMBlock(4 * w[0], 2 * w[0])
        self.out_tr_s = OutputTransition(2 * w[0], out_channels, head, head_kernel_size, head_hidden)
        self.out_tr_b = OutputTransition(2 * w[0], out_channels, head, head_kernel_size, head_hidden)

    def forward(
        self,
        x: torch.Tensor,
        extra_s: torch.Tensor | None = None,
        extra_b: torch.Tensor | None = None,
        head_b: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map ``x[B,C,P,P,P]`` (+ optional maps concatenated to each branch) to ``(out_s, out_b)``, ``[B,K,V,V,V]``.

        ``head_b=False`` skips the big branch's output head (``out_b`` is ``None``): the decoder still runs, since the
        small branch fuses its features, but inference never reads the last stage's big output.
        """
        x_s, x_b = self.branch_inputs(x)
        if extra_s is not None:
            x_s, x_b = torch.cat([x_s, extra_s], dim=1), torch.cat([x_b, extra_b], dim=1)
        b = self.in_tr_b(x_b)
        s = self._fuse("fusion_16", self.in_tr_s(x_s), b)
        skips_s, skips_b = [s], [b]
        for name in _DOWN:  # "down_32" is fused by "fusion_32", ...
            b = getattr(self, f"{name}_b")(b)
            s = self._fuse(name.replace("down", "fusion"), getattr(self, f"{name}_s")(s), b)
            skips_s.append(s)
            skips_b.append(b)
        s, b = self.bottleneck(s), self.bottleneck(b)
        for i, name in enumerate(_UP):
            b = getattr(self, f"{name}_b")(b, skips_b[3 - i])
            s = self._fuse(f"fusion_{name}", getattr(self, f"{name}_s")(s, skips_s[3 - i]), b)
        return self.out_tr_s(s), (self.out_tr_b(b) if head_b else None)


class BrainParcNet(nn.Module):
    """The BrainParc cascade (``BT_Joint``): Boundary → Tissue → Parc, trained end to end.

    ``forward(x[B, in_channels, P, P, P])`` with channels ``[intensity, edge]`` returns the 6-tuple
    ``(boundary_s, boundary_b, tissue_s, tissue_b, parc_s, parc_b)``, each ``[B, C, V, V, V]``. Boundary maps are
    sigmoid outputs; tissue and parcel maps are softmax probabilities. The tissue stage receives ``boundary[:, 1:]``
    (background boundary dropped) and the parcellation stage ``tissue[:, 1:]``, concatenated to its branch inputs.

    Parameters
    ----------
    in_channels
        Image channels (official: 2).
    n_boundary, n_tissue, n_parc
        Head widths (official: 4, 4, 107).
    widths, res_depths, bottleneck_depth, patch_size, valid_size, fusion_crops
        Shared by the three stages; see :class:`BrainParcStage`.

    Examples
    --------
    >>> net = BrainParcNet(widths=(2, 4, 4, 8, 8), res_depths=(1, 1, 1, 1), bottleneck_depth=1,
    ...                    patch_size=80, valid_size=48)
    >>> [tuple(t.shape[1:2]) for t in net(torch.zeros(1, 2, 80, 80, 80))]
    [(4,), (4,), (4,), (4,), (107,), (107,)]
    """

    def __init__(
        self,
        in_channels: int = 2,
        n_boundary: int = 4,
        n_tissue: int = 4,
        n_parc: int = 107,
        *,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        res_depths: Sequence[int] = (4, 4, 4, 8),
        bottleneck_depth: int = 8,
        patch_size: int = 160,
        valid_size: int = 96,
        fusion_crops: Mapping[str, Sequence[Sequence[float]]] | None = None,
        head_kernel_size: int = 3,
        head_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if n_boundary < 2 or n_tissue < 2:
            raise ValueError(f"n_boundary and n_tissue must be >= 2, got {n_boundary}, {n_tissue}")
        arch = dict(widths=widths, res_depths=res_depths, bottleneck_depth=bottleneck_depth)
        arch.update(patch_size=patch_size, valid_size=valid_size, fusion_crops=fusion_crops)
        arch.update(head_kernel_size=head_kernel_size, head_hidden=head_hidden)
        self.Boundary = BrainParcStage(in_channels, n_boundary, "sigmoid", **arch)
        self.Tissue = BrainParcStage(in_channels + n_boundary - 1, n_tissue, "softmax", **arch)
        self.Parc = BrainParcStage(in_channels + n_tissue - 1, n_parc, "softmax", **arch)
        self.in_channels, self.out_channels = in_channels, n_parc
        self.head_channels = (n_boundary, n_tissue, n_parc)
        self.patch_size, self.valid_size = patch_size, valid_size
        self.preset: str | None = None
        #: constructor keywords as JSON-able data: stored in model cards to rebuild the network without pickle
        self.config = to_jsonable(
            dict(in_channels=in_channels, n_boundary=n_boundary, n_tissue=n_tissue, n_parc=n_parc, **arch)
        )

    def forward(self, x: torch.Tensor, parc_b: bool = True) -> tuple[torch.Tensor | None, ...]:
        """Run the cascade; see the class docstring for the 6-tuple.

        ``parc_b=False`` returns ``None`` for ``parc_b`` and saves its 107-channel head (inference uses ``parc_s``).
        """
        bnd_s, bnd_b = self.Boundary(x)
        tis_s, tis_b = self.Tissue(x, bnd_s[:, 1:], bnd_b[:, 1:])
        par_s, par_b = self.Parc(x, tis_s[:, 1:], tis_b[:, 1:], head_b=parc_b)
        return bnd_s, bnd_b, tis_s, tis_b, par_s, par_b
