"""AutoStrip skull-stripping network (``ASNet`` / ``SegNetMultiScale``), reference §1.6.

Dual-branch like a BrainParc stage, but lighter: no CBAM, no bottleneck, no fusion at the first level, fusion blocks
are plain conv3 + IBN + LeakyReLU(0.2), and IBN-a normalisation sits exactly where the official code puts it (every
``fusion_*`` block and the non-last residual blocks of the up transitions). Module names are the official state-dict
names (without the ``module.`` prefix of the DataParallel checkpoints); the number in a name is a level name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .blocks import (
    BasicBlock,
    Box,
    DownTransition,
    DualBranch,
    InputTransition,
    OutputTransition,
    UpTransition,
    check_geometry,
    check_positive_ints,
    resolve_crops,
    to_jsonable,
)

#: fusion site → resolution level (0 = valid_size³).
FUSION_SITES: dict[str, int] = {
    "fusion_32": 1,
    "fusion_64": 2,
    "fusion_128": 3,
    "fusion_256": 4,
    "fusion_up_256": 3,
    "fusion_up_128": 2,
    "fusion_up_64": 1,
    "fusion_up_32": 0,
}

#: The integer crops of the official code (reference §1.6).
OFFICIAL_FUSION_CROPS: dict[str, list[list[int]]] = {
    "fusion_32": [[7, 57]] * 3,
    "fusion_64": [[4, 28]] * 3,
    "fusion_128": [[2, 14]] * 3,
    "fusion_256": [[1, 7]] * 3,
    "fusion_up_256": [[2, 14]] * 3,
    "fusion_up_128": [[4, 28]] * 3,
    "fusion_up_64": [[7, 57]] * 3,
    "fusion_up_32": [[13, 115]] * 3,
}

_DOWN = ("down_32", "down_64", "down_128", "down_256")
_UP = ("up_256", "up_128", "up_64", "up_32")


def _fusion(in_channels: int, out_channels: int) -> BasicBlock:
    return BasicBlock(in_channels, out_channels, 3, 1, activate=True, act="leakyrelu", norm="ibn")


class AutoStripNet(DualBranch):
    """AutoStrip dual-branch brain-extraction network.

    ``forward(x[B, in_channels, P, P, P])`` returns ``(s, b)``: ``s`` is ``[B, out_channels, V, V, V]`` softmax over
    the centre ``V³`` of the patch, ``b`` the same over the whole patch resized to ``V³``.

    Parameters
    ----------
    in_channels, out_channels
        Official: 1 (pseudo-brain) and 2 (background, brain).
    widths
        Five feature widths, level 0 … 4 (official: 16, 32, 64, 128, 256).
    res_depths
        Residual depths of the four down transitions (official: 1, 1, 2, 2); the up transitions mirror them.
    patch_size, valid_size
        Input window edge and small-branch edge (official: 160, 128).
    fusion_crops
        ``{fusion site: three (start, stop) pairs}`` or ``None`` for the exact field of view.

    Examples
    --------
    >>> net = AutoStripNet(widths=(2, 4, 4, 8, 8), res_depths=(1, 1, 1, 1), patch_size=80, valid_size=64)
    >>> [tuple(t.shape) for t in net(torch.zeros(1, 1, 80, 80, 80))]
    [(1, 2, 64, 64, 64), (1, 2, 64, 64, 64)]
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        res_depths: Sequence[int] = (1, 1, 2, 2),
        patch_size: int = 160,
        valid_size: int = 128,
        fusion_crops: Mapping[str, Sequence[Sequence[float]]] | None = None,
    ) -> None:
        super().__init__()
        w = check_positive_ints("widths", widths, 5)
        d = check_positive_ints("res_depths", res_depths, 4)
        check_positive_ints("in_channels/out_channels", (in_channels, out_channels), 2)
        if min(w) < 2:
            raise ValueError(f"widths must be >= 2 (IBN splits channels in halves), got {widths!r}")
        check_geometry(patch_size, valid_size, levels=4)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.widths, self.res_depths = w, d
        self.patch_size, self.valid_size = patch_size, valid_size
        self.crops: dict[str, Box] = resolve_crops(FUSION_SITES, fusion_crops, patch_size, valid_size)
        self.preset: str | None = None
        #: constructor keywords as JSON-able data: stored in model cards to rebuild the network without pickle
        self.config = to_jsonable(
            dict(
                in_channels=in_channels,
                out_channels=out_channels,
                widths=widths,
                res_depths=res_depths,
                patch_size=patch_size,
                valid_size=valid_size,
                fusion_crops=fusion_crops,
            )
        )

        self.in_tr_s = InputTransition(in_channels, w[0])
        self.in_tr_b = InputTransition(in_channels, w[0])
        self.down_32_s = DownTransition(w[0], w[1], d[0])
        self.down_32_b = DownTransition(w[0], w[1], d[0])
        self.fusion_32 = _fusion(2 * w[1], w[1])
        self.down_64_s = DownTransition(w[1], w[2], d[1])
        self.down_64_b = DownTransition(w[1], w[2], d[1])
        self.fusion_64 = _fusion(2 * w[2], w[2])
        self.down_128_s = DownTransition(w[2], w[3], d[2])
        self.down_128_b = DownTransition(w[2], w[3], d[2])
        self.fusion_128 = _fusion(2 * w[3], w[3])
        self.down_256_s = DownTransition(w[3], w[4], d[3])
        self.down_256_b = DownTransition(w[3], w[4], d[3])
        self.fusion_256 = _fusion(2 * w[4], w[4])
        self.up_256_s = UpTransition(w[4], w[3], d[3], norm="ibn")
        self.up_256_b = UpTransition(w[4], w[3], d[3], norm="ibn")
        self.fusion_up_256 = _fusion(4 * w[3], 2 * w[3])
        self.up_128_s = UpTransition(2 * w[3], w[2], d[2], norm="ibn")
        self.up_128_b = UpTransition(2 * w[3], w[2], d[2], norm="ibn")
        self.fusion_up_128 = _fusion(4 * w[2], 2 * w[2])
        self.up_64_s = UpTransition(2 * w[2], w[1], d[1], norm="ibn")
        self.up_64_b = UpTransition(2 * w[2], w[1], d[1], norm="ibn")
        self.fusion_up_64 = _fusion(4 * w[1], 2 * w[1])
        self.up_32_s = UpTransition(2 * w[1], w[0], d[0], norm="ibn")
        self.up_32_b = UpTransition(2 * w[1], w[0], d[0], norm="ibn")
        self.fusion_up_32 = _fusion(4 * w[0], 2 * w[0])
        self.out_tr_s = OutputTransition(2 * w[0], out_channels, "softmax")
        self.out_tr_b = OutputTransition(2 * w[0], out_channels, "softmax")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``x[B,C,P,P,P]`` to ``(s, b)``, softmax probabilities ``[B,K,V,V,V]``."""
        x_s, x_b = self.branch_inputs(x)
        s, b = self.in_tr_s(x_s), self.in_tr_b(x_b)
        skips_s, skips_b = [s], [b]
        for name in _DOWN:
            b = getattr(self, f"{name}_b")(b)
            s = self._fuse(name.replace("down", "fusion"), getattr(self, f"{name}_s")(s), b)
            skips_s.append(s)
            skips_b.append(b)
        for i, name in enumerate(_UP):
            b = getattr(self, f"{name}_b")(b, skips_b[3 - i])
            s = self._fuse(f"fusion_{name}", getattr(self, f"{name}_s")(s, skips_s[3 - i]), b)
        return self.out_tr_s(s), self.out_tr_b(b)
