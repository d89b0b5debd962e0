"""Building blocks of the BrainParc and AutoStrip networks.

Attribute names are the official state-dict names (``conv``, ``bn``, ``do.<k>``, ``trans``, ``down``, ``bn1``,
``residual``, ``conv1``, ``conv2``, ``ca.fc.0``, ``sa.conv1``, ``bn.IN``, ``bn.BN`` ...): they are public API because
the official checkpoints load into them by name (reference §1.1, §1.5, §1.6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Norm = Literal["bn", "ibn"]
Activation = Literal["leakyrelu", "relu"]


def make_norm(channels: int, norm: Norm = "bn") -> nn.Module:
    """Return the normalisation layer named by ``norm``: ``"bn"`` → BatchNorm3d, ``"ibn"`` → :class:`IBN`."""
    if norm == "bn":
        return nn.BatchNorm3d(channels)
    if norm == "ibn":
        return IBN(channels)
    raise ValueError(f"norm must be 'bn' or 'ibn', got {norm!r}")


def make_activation(act: Activation) -> nn.Module:
    """``"leakyrelu"`` → LeakyReLU(0.2) (the official default), ``"relu"`` → ReLU."""
    if act == "leakyrelu":
        return nn.LeakyReLU(0.2)
    if act == "relu":
        return nn.ReLU()
    raise ValueError(f"act must be 'leakyrelu' or 'relu', got {act!r}")


class IBN(nn.Module):
    """Instance-Batch normalisation (IBN-a, AutoStrip).

    The first ``channels // 2`` channels go through ``InstanceNorm3d(affine=True)`` (no running statistics), the rest
    through ``BatchNorm3d``. State keys: ``IN.{weight,bias}``, ``BN.{weight,bias,running_mean,running_var,...}``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"IBN needs at least 2 channels, got {channels}")
        self.half = channels // 2
        self.IN = nn.InstanceNorm3d(self.half, affine=True)
        self.BN = nn.BatchNorm3d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


class BasicBlock(nn.Module):
    """3-D convolution (bias on) → norm → optional activation. Keys: ``conv``, ``bn``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        activate: bool = True,
        act: Activation = "leakyrelu",
        norm: Norm = "bn",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, bias=True)
        self.bn = make_norm(out_channels, norm)
        self.act = make_activation(act) if activate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """``depth`` stacked BasicBlocks with one identity skip around the whole stack.

    y = LeakyReLU(0.2)(do(x) + x). Blocks ``0 … depth-2`` are activated and use ``norm``; the last block has no
    activation and always plain BatchNorm (AutoStrip's IBN-a rule; for BrainParc every block is BN anyway).
    """

    def __init__(self, channels: int, depth: int, norm: Norm = "bn") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"residual depth must be >= 1, got {depth}")
        blocks = [BasicBlock(channels, channels, 3, 1, activate=True, norm=norm) for _ in range(depth - 1)]
        blocks.append(BasicBlock(channels, channels, 3, 1, activate=False, norm="bn"))
        self.do = nn.Sequential(*blocks)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.do(x) + x)


class InputTransition(nn.Module):
    """conv3 → BN → LeakyReLU(0.2). Keys: ``trans.conv``, ``trans.bn``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.trans = BasicBlock(in_channels, out_channels, 3, 1, activate=True, act="leakyrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trans(x)


class OutputTransition(nn.Module):
    """conv → BN → ReLU → 1×1 conv → sigmoid or softmax over channels. Keys: ``conv1``, ``bn1``, ``conv2``.

    Official: ``conv1`` is 3×3×3 from ``in_channels`` to ``out_channels`` (``hidden = None``). Light presets may use
    ``kernel_size=1`` and a narrower ``hidden`` width, because with 107 classes at full resolution the official
    head dominates the compute of a narrow network.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        head: Literal["sigmoid", "softmax"],
        kernel_size: int = 3,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        if head not in ("sigmoid", "softmax"):
            raise ValueError(f"head must be 'sigmoid' or 'softmax', got {head!r}")
        if kernel_size not in (1, 3):
            raise ValueError(f"head kernel_size must be 1 or 3, got {kernel_size}")
        hidden = out_channels if hidden is None else hidden
        self.head = head
        self.conv1 = nn.Conv3d(in_channels, hidden, kernel_size, padding=kernel_size // 2, bias=True)
        self.bn1 = nn.BatchNorm3d(hidden)
        self.activate1 = nn.ReLU()
        self.conv2 = nn.Conv3d(hidden, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.activate1(self.bn1(self.conv1(x))))
        return torch.sigmoid(y) if self.head == "sigmoid" else torch.softmax(y, dim=1)


class DownTransition(nn.Module):
    """2×2×2 stride-2 conv → BN → ReLU → ResidualBlock. Keys: ``down``, ``bn1``, ``residual``.

    The official block fixes ``out_channels = 2 * in_channels``; here it is a parameter.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, norm: Norm = "bn") -> None:
        super().__init__()
        self.down = nn.Conv3d(in_channels, out_channels, 2, stride=2, bias=True)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.activate1 = nn.ReLU()
        self.residual = ResidualBlock(out_channels, depth, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(self.activate1(self.bn1(self.down(x))))


class UpTransition(nn.Module):
    """×2 trilinear upsampling (align_corners=True) → conv3 → BN → ReLU → concat skip → ResidualBlock.

    ``conv1`` maps ``in_channels`` to ``skip_channels``; the concatenation has ``2 * skip_channels`` channels, which is
    the output width (official: ``UpTransition(in, out)`` with ``skip = out / 2``). Keys: ``conv1``, ``bn``,
    ``residual``.
    """

    def __init__(self, in_channels: int, skip_channels: int, depth: int, norm: Norm = "bn") -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
        self.conv1 = nn.Conv3d(in_channels, skip_channels, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm3d(skip_channels)
        self.activate = nn.ReLU()
        self.residual = ResidualBlock(2 * skip_channels, depth, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = self.activate(self.bn(self.conv1(self.up(x))))
        return self.residual(torch.cat([y, skip], dim=1))


class ChannelAttention(nn.Module):
    """sigmoid(fc(avgpool x) + fc(maxpool x)); ``fc`` = 1×1 conv (no bias) → LeakyReLU(0.1) → 1×1 conv (no bias).

    Hidden width ``max(1, channels // ratio)`` (the official widths always give ≥ 1). Keys: ``fc.0``, ``fc.2``.
    """

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.max_pool = nn.AdaptiveMaxPool3d(1)
        self.fc = nn.Sequential(
            nn.Conv3d(channels, hidden, 1, bias=False),
            nn.LeakyReLU(0.1),
            nn.Conv3d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class SpatialAttention(nn.Module):
    """sigmoid(conv5([mean_c x, max_c x])), 2 → 1 channel, no bias. Key: ``conv1``."""

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv1(pooled))


class CBAMBlock(nn.Module):
    """conv3 → BN → channel attention → spatial attention (sequential, as in the code) → LeakyReLU(0.2).

    Keys: ``conv``, ``bn``, ``ca.fc.{0,2}``, ``sa.conv1``. The paper figure draws the two attentions in parallel; the
    official weights were trained with this sequential order (reference §1.1).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm3d(out_channels)
        self.ca = ChannelAttention(out_channels)
        self.sa = SpatialAttention(5)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        x = x * self.ca(x)
        x = x * self.sa(x)
        return self.act(x)


# --- fusion geometry -------------------------------------------------------------------------------------------------

Box = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def exact_fov_box(patch_size: int, valid_size: int, level: int) -> Box:
    """Field of view of the small branch in big-branch voxel-edge coordinates at ``level`` (0 = full resolution).

    The small branch sees input voxels ``[m, m + V)`` with ``m = (P - V) / 2``; the big branch is the whole patch
    resized by ``V / P`` and then halved ``level`` times, so the box is ``[m, m + V) · (V / P) / 2**level`` per axis.
    """
    scale = valid_size / patch_size / 2**level
    margin = (patch_size - valid_size) / 2
    lo, hi = margin * scale, (margin + valid_size) * scale
    return ((lo, hi), (lo, hi), (lo, hi))


def _is_integer_box(box: Box) -> bool:
    return all(float(v).is_integer() for pair in box for v in pair)


def _interp_matrix(n: int, lo: float, hi: float, size: int) -> tuple[int, int, torch.Tensor]:
    """Linear-interpolation weights ``[size, stop - start]`` over source rows ``start:stop`` of an axis of length n.

    Same sample positions as ``F.interpolate(..., align_corners=False)`` applied to the interval [lo, hi): output
    voxel i is centred at ``lo + (i + 0.5) * (hi - lo) / size`` in voxel-edge coordinates; positions are clamped to
    the tensor. Only the rows that carry weight are returned, so the matmul stays small.
    """
    pos = lo + (torch.arange(size, dtype=torch.float64) + 0.5) * ((hi - lo) / size) - 0.5
    pos = pos.clamp(0, n - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = pos - i0
    start, stop = int(i0.min()), int(i1.max()) + 1
    weights = torch.zeros(size, stop - start, dtype=torch.float64)
    rows = torch.arange(size)
    weights.index_put_((rows, i0 - start), 1 - frac, accumulate=True)
    weights.index_put_((rows, i1 - start), frac, accumulate=True)
    return start, stop, weights


def _resample_axis(x: torch.Tensor, dim: int, lo: float, hi: float, size: int) -> torch.Tensor:
    """Resample ``x`` along ``dim`` over the continuous interval [lo, hi) onto ``size`` samples (see above)."""
    start, stop, weights = _interp_matrix(x.shape[dim], lo, hi, size)
    x = x.narrow(dim, start, stop - start).movedim(dim, -1)
    y = torch.matmul(x, weights.to(dtype=x.dtype, device=x.device).T)
    return y.movedim(-1, dim)


def crop_resize(x: torch.Tensor, box: Box, size: tuple[int, int, int]) -> torch.Tensor:
    """Take the region ``box`` of a big-branch feature map and resample it to the small-branch ``size``.

    An all-integer box reproduces the official code exactly: integer slice, then trilinear ``F.interpolate`` with
    ``align_corners=False``. A fractional box (non-official presets, computed by :func:`exact_fov_box`) is resampled
    exactly by separable linear interpolation with the same sample-position convention.
    """
    if _is_integer_box(box):
        (a0, a1), (b0, b1), (c0, c1) = ((int(lo), int(hi)) for lo, hi in box)
        crop = x[:, :, a0:a1, b0:b1, c0:c1]
        if tuple(crop.shape[2:]) == tuple(size):
            return crop
        return F.interpolate(crop, size=size, mode="trilinear", align_corners=False)
    for axis, ((lo, hi), n) in enumerate(zip(box, size, strict=True)):
        x = _resample_axis(x, 2 + axis, float(lo), float(hi), int(n))
    return x


def check_positive_ints(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    """Return ``values`` as a tuple after checking it holds exactly ``length`` positive ints (else ValueError)."""
    vals = tuple(values)
    if len(vals) != length or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals):
        raise ValueError(f"{name} must be {length} positive integers, got {values!r}")
    return vals


def check_geometry(patch_size: int, valid_size: int, levels: int) -> None:
    """Validate a (patch, valid) pair: ``0 < V < P``, ``P - V`` even, ``V`` divisible by ``2**levels``."""
    if not (isinstance(patch_size, int) and isinstance(valid_size, int)):
        raise ValueError(f"patch_size and valid_size must be int, got {patch_size!r}, {valid_size!r}")
    if not 0 < valid_size < patch_size:
        raise ValueError(f"need 0 < valid_size < patch_size, got valid_size={valid_size}, patch_size={patch_size}")
    if (patch_size - valid_size) % 2:
        raise ValueError(f"patch_size - valid_size must be even (centred crop), got {patch_size} - {valid_size}")
    if valid_size % 2**levels:
        raise ValueError(f"valid_size must be divisible by {2**levels} ({levels} down-samplings), got {valid_size}")


def resolve_crops(
    sites: dict[str, int],
    fusion_crops: dict[str, object] | None,
    patch_size: int,
    valid_size: int,
) -> dict[str, Box]:
    """Return one box per fusion site (``{name: level}``): the given table, or the exact FOV when ``None``.

    A given table must name every site exactly once; each box is three ``(start, stop)`` pairs in big-branch
    coordinates of that level, with ``0 <= start < stop <= valid_size / 2**level``.
    """
    if fusion_crops is None:
        return {name: exact_fov_box(patch_size, valid_size, level) for name, level in sites.items()}
    if set(fusion_crops) != set(sites):
        missing, extra = sorted(set(sites) - set(fusion_crops)), sorted(set(fusion_crops) - set(sites))
        raise ValueError(f"fusion_crops must have exactly the keys {sorted(sites)}; missing {missing}, extra {extra}")
    boxes: dict[str, Box] = {}
    for name, level in sites.items():
        raw = fusion_crops[name]
        try:
            box = tuple((float(lo), float(hi)) for lo, hi in raw)  # type: ignore[union-attr]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"fusion_crops[{name!r}] must be three (start, stop) pairs, got {raw!r}") from exc
        size = valid_size / 2**level
        if len(box) != 3 or not all(0 <= lo < hi <= size for lo, hi in box):
            raise ValueError(f"fusion_crops[{name!r}] = {raw!r} must be three (start, stop) pairs within [0, {size:g}]")
        boxes[name] = box  # type: ignore[assignment]
    return boxes


def to_jsonable(value: object) -> object:
    """Tuples → lists, mappings → dicts, recursively (for model cards)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


class DualBranch(nn.Module):
    """Shared plumbing of the dual-branch networks: branch inputs and the big → small fusion.

    Subclasses set ``patch_size``, ``valid_size`` and ``crops`` (fusion site → crop box in big-branch coordinates) and
    own one fusion block per site, named as the site. Holds no parameters, so state-dict keys are unaffected.
    """

    patch_size: int
    valid_size: int
    crops: Mapping[str, Box]

    def branch_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre ``V³`` crop (small branch) and whole patch resized to ``V³`` (big branch) of ``x[B,C,P,P,P]``."""
        p, v = self.patch_size, self.valid_size
        if tuple(x.shape[2:]) != (p, p, p):
            raise ValueError(f"expected a {p}³ patch, got spatial shape {tuple(x.shape[2:])}")
        m = (p - v) // 2
        x_s = x[:, :, m : m + v, m : m + v, m : m + v]
        x_b = F.interpolate(x, size=(v, v, v), mode="trilinear", align_corners=False)
        return x_s, x_b

    def _fuse(self, name: str, s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Fusion site ``name``: crop the big-branch feature to the small branch's field of view, concatenate, fuse."""
        b_crop = crop_resize(b, self.crops[name], tuple(s.shape[2:]))
        return getattr(self, name)(torch.cat([s, b_crop], dim=1))
