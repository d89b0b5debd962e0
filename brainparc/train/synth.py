"""SynthSeg-style synthetic images from label maps (Billot et al., Med. Image Anal. 2023), pure torch on CPU.

One call of :func:`synthesize` turns an integer label volume into a random image and the matching deformed labels:

1. spatial: random affine (rotation, scaling, shear, translation) + smooth nonlinear displacement (a Gaussian field on
   a coarse grid, upsampled trilinearly; not integrated, so keep its std to a few voxels) applied to the labels with
   nearest sampling, directly onto the output grid (``out_shape`` around ``centre``: crop and deformation in one
   resampling, so a 160³ patch costs the same whatever the source size);
2. intensities: per label value a Gaussian with a random mean and std (optionally drawn around priors); with
   probability ``invert_prob`` the foreground means are mirrored (``m → 1 − m``), which turns a T1-like prior contrast
   (WM > GM) into an infant-like one (WM < GM);
3. blur (random anisotropic Gaussian), low-resolution simulation (one or all axes downsampled to a random spacing
   and upsampled back), additive Gaussian noise, a smooth multiplicative bias field, min–max scaling to [0, 1] and a
   random gamma; optionally zero background (skull-stripped images).

Everything is drawn from the ``torch.Generator`` passed in: the same seed gives the same output.  The helpers
(:func:`random_spatial_grid`, :func:`resample`, :func:`augment_intensity`) also serve real-image augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TISSUE_PRIOR_MEANS",
    "SynthParams",
    "augment_intensity",
    "gaussian_blur",
    "lateral_classes",
    "random_spatial_grid",
    "resample",
    "smooth_displacement",
    "synthesize",
    "tissue_priors",
]

# adult-T1-like mean intensity per tissue (background, CSF, GM, WM) on a [0, 1] scale
TISSUE_PRIOR_MEANS = (0.0, 0.15, 0.5, 0.8)


@dataclass(frozen=True)
class SynthParams:
    """Ranges of the random draws (voxel units; intensities in [0, 1] before scaling)."""

    deform: bool = True
    rotation_deg: float = 15.0  # each Euler angle ~ U(-r, r)
    scaling: float = 0.15  # each axis scale ~ U(1 - s, 1 + s)
    shear: float = 0.012  # each shear ~ U(-s, s)
    translation: float = 0.0  # each axis ~ U(-t, t) voxels
    nonlin_std: float = 2.5  # field std ~ U(0, nonlin_std) voxels
    nonlin_grid: int = 5  # coarse field size per axis
    mean_range: tuple[float, float] = (0.0, 1.0)
    std_range: tuple[float, float] = (0.0, 0.05)
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # per-axis σ ~ U
    lowres_prob: float = 0.25
    lowres_all_axes_prob: float = 0.5  # else one random axis
    lowres_spacing: tuple[float, float] = (1.5, 4.0)
    noise_std: tuple[float, float] = (0.0, 0.03)
    bias_std: float = 0.3  # log-field std ~ U(0, bias_std)
    bias_grid: int = 4
    gamma_std: float = 0.25  # exponent = exp(N(0, gamma_std))
    prior_prob: float = 1.0  # when priors are given: probability of using them (else U(mean_range))
    invert_prob: float = 0.0
    background_zero: bool = False


def _u(gen: torch.Generator, lo: float, hi: float, n: int | None = None) -> Tensor:
    shape = () if n is None else (n,)
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _affine_matrix(gen: torch.Generator, p: SynthParams) -> Tensor:
    """Random 3×3 matrix R·Sh·S (float64)."""
    ang = _u(gen, -p.rotation_deg, p.rotation_deg, 3) * math.pi / 180
    c, s = torch.cos(ang).tolist(), torch.sin(ang).tolist()
    rx = torch.tensor([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]], dtype=torch.float64)
    ry = torch.tensor([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]], dtype=torch.float64)
    rz = torch.tensor([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]], dtype=torch.float64)
    sh = _u(gen, -p.shear, p.shear, 6).tolist()
    shear = torch.tensor([[1, sh[0], sh[1]], [sh[2], 1, sh[3]], [sh[4], sh[5], 1]], dtype=torch.float64)
    scale = torch.diag(_u(gen, 1 - p.scaling, 1 + p.scaling, 3))
    return rx @ ry @ rz @ shear @ scale


def random_spatial_grid(
    in_shape: tuple[int, int, int],
    out_shape: tuple[int, int, int],
    gen: torch.Generator,
    params: SynthParams = SynthParams(),
    centre: tuple[float, float, float] | None = None,
) -> Tensor:
    """Sampling grid ``[1, *out_shape, 3]`` for ``grid_sample(align_corners=True)`` of an ``in_shape`` volume.

    Output voxel x samples source point ``centre + A·(x − c_out) + d(x)`` (voxel units), with A from
    :func:`_affine_matrix` and d the smooth random displacement; identity A and d = 0 when ``params.deform`` is False.
    ``c_out = out_shape // 2`` and ``centre`` defaults to ``in_shape // 2``: integer centres keep undeformed samples
    on voxel centres for even sizes too (a ``(n − 1)/2`` centre would put nearest sampling on half-voxel ties), and
    an undeformed window is the slice starting at ``centre − out_shape // 2`` (as ``data.window_start``).
    """
    size_in = torch.tensor(in_shape, dtype=torch.float32)
    c_src = torch.tensor([n // 2 for n in in_shape] if centre is None else centre, dtype=torch.float32)
    A = torch.eye(3)
    shift = c_src.clone()
    if params.deform:
        A = _affine_matrix(gen, params).float()
        shift = shift + _u(gen, -params.translation, params.translation, 3).float()
    # grid_sample wants (W, H, D) = (z, y, x) order and [-1, 1] coordinates (align_corners=True): fold the
    # normalisation into the affine, then build the grid by broadcasting (much cheaper than a [N, 3] matmul)
    norm = 2.0 / (size_in - 1).clamp(min=1)
    A = (A * norm[:, None]).flip(0)
    shift = (shift * norm - 1.0).flip(0)
    axes = [torch.arange(n, dtype=torch.float32) - n // 2 for n in out_shape]
    X, Y, Z = out_shape
    pts = (
        (axes[0].view(X, 1, 1, 1) * A[:, 0])
        + (axes[1].view(1, Y, 1, 1) * A[:, 1])
        + (axes[2].view(1, 1, Z, 1) * A[:, 2] + shift)
    )
    pts = pts.unsqueeze(0)
    if params.deform:
        std = float(_u(gen, 0.0, params.nonlin_std))
        pts = pts + smooth_displacement(gen, std, params.nonlin_grid, in_shape, out_shape)
    return pts


def smooth_displacement(
    gen: torch.Generator, std: float, points: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> Tensor:
    """A smooth random displacement of a sampling grid of ``in_shape`` (``[1, *out_shape, 3]``, ``grid_sample`` units).

    Gaussian, ``std`` voxels per axis, on a ``points``³ control grid spread over the output, upsampled trilinearly
    (not integrated: keep ``std`` to a few voxels).
    """
    norm = 2.0 / (torch.tensor(in_shape, dtype=torch.float32) - 1).clamp(min=1)
    field = torch.randn((1, 3, points, points, points), generator=gen) * std * norm.view(1, 3, 1, 1, 1)
    field = F.interpolate(field.flip(1), size=tuple(out_shape), mode="trilinear", align_corners=True)[0]
    return field.permute(1, 2, 3, 0).unsqueeze(0)


def resample(vol: Tensor, grid: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample a 3-D volume ``[X, Y, Z]`` (or ``[C, X, Y, Z]``) on a :func:`random_spatial_grid` grid; 0 outside."""
    x = vol.float()
    squeeze = x.dim() == 3
    x = x[None, None] if squeeze else x[None]
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return out[0] if squeeze else out


def _gauss_kernel(sigma: float) -> Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: Tensor, sigmas: tuple[float, float, float]) -> Tensor:
    """Separable Gaussian blur of ``[X, Y, Z]`` with per-axis σ (voxels; σ < 0.1 skips the axis), edge replication."""
    x = img
    for axis, s in enumerate(sigmas):
        if s < 0.1:
            continue
        k = _gauss_kernel(float(s)).tolist()
        r = len(k) // 2
        n = x.shape[axis]
        # shifted sums on an edge-replicated copy: far faster than a 1-channel conv3d on CPU
        xp = x.index_select(axis, torch.arange(-r, n + r).clamp(0, n - 1))
        acc = xp.narrow(axis, 0, n) * k[0]
        for j in range(1, len(k)):
            acc.add_(xp.narrow(axis, j, n), alpha=k[j])
        x = acc
    return x


def _lowres(img: Tensor, gen: torch.Generator, p: SynthParams) -> Tensor:
    """Simulate a thick-slice / low-resolution acquisition: blur + downsample one or all axes, upsample back."""
    if float(_u(gen, 0, 1)) >= p.lowres_prob:
        return img
    spacing = [1.0, 1.0, 1.0]
    if float(_u(gen, 0, 1)) < p.lowres_all_axes_prob:
        spacing = [float(_u(gen, *p.lowres_spacing))] * 3
    else:
        spacing[int(torch.randint(0, 3, (), generator=gen))] = float(_u(gen, *p.lowres_spacing))
    # anti-aliasing blur: σ = 0.4·spacing (≈ FWHM of the thick voxel), as SynthSeg's resolution model
    blurred = gaussian_blur(img, tuple(0.4 * s if s > 1 else 0.0 for s in spacing))
    small = [max(2, round(n / s)) for n, s in zip(img.shape, spacing, strict=True)]
    low = F.interpolate(blurred[None, None], size=small, mode="trilinear", align_corners=True)
    return F.interpolate(low, size=tuple(img.shape), mode="trilinear", align_corners=True)[0, 0]


def augment_intensity(
    img: Tensor,
    gen: torch.Generator,
    params: SynthParams = SynthParams(),
    mask: Tensor | None = None,
) -> Tensor:
    """Blur, low-resolution simulation, noise, bias field, [0, 1] scaling and gamma of a ``[X, Y, Z]`` image.

    The image is first min–max scaled to [0, 1]; voxels outside ``mask`` (if given) are 0 in the result.
    """
    p = params
    x = img.float()
    lo, hi = x.aminmax()
    x = (x - lo) / (hi - lo).clamp(min=1e-6)
    sig = _u(gen, *p.blur_sigma, 3).tolist()
    x = gaussian_blur(x, tuple(sig))
    x = _lowres(x, gen, p)
    x = x + torch.randn(x.shape, generator=gen) * float(_u(gen, *p.noise_std))
    g = p.bias_grid
    field = torch.randn((1, 1, g, g, g), generator=gen) * float(_u(gen, 0.0, p.bias_std))
    x = x * torch.exp(F.interpolate(field, size=tuple(x.shape), mode="trilinear", align_corners=True)[0, 0])
    x = x.clamp(min=0)
    if mask is not None:
        x = x * (mask > 0)
    x = x / x.max().clamp(min=1e-6)
    x = x ** float(torch.exp(torch.randn((), generator=gen, dtype=torch.float64) * p.gamma_std))
    return x


def synthesize(
    labels: Tensor,
    gen: torch.Generator,
    params: SynthParams = SynthParams(),
    out_shape: tuple[int, int, int] | None = None,
    centre: tuple[float, float, float] | None = None,
    priors: tuple[Tensor, Tensor] | None = None,
    classes: Tensor | None = None,
    grid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Random image and deformed labels from an integer label volume ``[X, Y, Z]`` (values ≥ 0).

    Parameters
    ----------
    labels
        Label values (any integer ids, e.g. FreeSurfer ids; 0 = background).
    gen
        Source of all randomness.
    out_shape, centre
        Output grid size (default: input size) and its centre in source voxel coordinates (default: source centre).
    priors
        Optional ``(mean, std)`` lookup tables indexed by label value: with probability ``prior_prob`` each
        label's mean is drawn from ``N(mean[l], std[l])`` instead of ``U(mean_range)`` (see :func:`tissue_priors`).

    classes
        Optional lookup table label value → intensity class: values of one class share their random draws (e.g.
        left and right homologues, :func:`lateral_classes`), as SynthSeg's generation classes.
    grid
        Optional sampling grid from :func:`random_spatial_grid` (``out_shape`` and ``centre`` are then taken from it):
        draw it first to deform other volumes identically, e.g. template coordinates with :func:`resample`.

    Returns
    -------
    image, labels
        float32 image in [0, 1] and int64 labels, both ``out_shape``.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be a 3-D volume, got shape {tuple(labels.shape)}")
    p = params
    in_shape = tuple(labels.shape)
    out_shape = in_shape if out_shape is None else tuple(out_shape)
    if grid is None and (p.deform or out_shape != in_shape or centre is not None):
        grid = random_spatial_grid(in_shape, out_shape, gen, p, centre)  # type: ignore[arg-type]
    if grid is None:
        lab_f = labels.float()
    else:
        lab_f = resample(labels.float(), grid, mode="nearest")
        out_shape = tuple(lab_f.shape)
    # min/max on the (smaller) float output: int64 reductions are slow on CPU; ids absent from it need no intensity
    lo, hi = lab_f.aminmax() if lab_f.numel() else (torch.zeros(()), torch.zeros(()))
    if lo < 0:
        raise ValueError("labels must be non-negative")
    lab = lab_f.round().long()
    n_ids = int(hi.round()) + 1
    cls = torch.arange(n_ids) if classes is None else torch.as_tensor(classes, dtype=torch.long)
    if cls.numel() < n_ids:
        raise ValueError(f"classes must cover label values 0..{n_ids - 1}")
    cls = cls[:n_ids]
    n_cls = int(cls.max()) + 1
    use_priors = priors is not None and float(_u(gen, 0, 1)) < p.prior_prob
    if not use_priors:
        means = _u(gen, *p.mean_range, n_cls).float()[cls]
    else:
        pm, ps = (torch.as_tensor(t, dtype=torch.float32) for t in priors)  # type: ignore[union-attr]
        if pm.numel() < n_ids or ps.numel() < n_ids:
            raise ValueError(f"priors must cover label values 0..{n_ids - 1}")
        means = pm[:n_ids] + ps[:n_ids] * torch.randn(n_cls, generator=gen)[cls]
    stds = _u(gen, *p.std_range, n_cls).float()[cls]
    if float(_u(gen, 0, 1)) < p.invert_prob and n_ids > 1:  # a patch of background alone has no contrast to mirror
        # mirror the foreground contrast inside the range of the drawn means (WM > GM becomes WM < GM)
        fg = means[1:]
        means = torch.cat([means[:1], fg.max() + fg.min() - fg])
    img = means[lab] + stds[lab] * torch.randn(out_shape, generator=gen)
    mask = (lab > 0) if p.background_zero else None
    img = augment_intensity(img, gen, p, mask)
    return img.float(), lab


def tissue_priors(
    tissue_of_value: dict[int, int | None],
    n_values: int,
    means: tuple[float, float, float, float] = TISSUE_PRIOR_MEANS,
    std: float = 0.08,
    unknown: tuple[float, float] = (0.5, 0.3),
) -> tuple[Tensor, Tensor]:
    """T1-like ``(mean, std)`` prior tables for :func:`synthesize` from a label value → tissue (0-3) map.

    Values mapped to ``None`` or absent (e.g. skull, skin, mixed-tissue groups) get the broad ``unknown`` prior.
    With ``invert_prob`` the drawn foreground means are mirrored, giving infant-like contrast (WM darker than GM).
    """
    m = torch.full((n_values,), unknown[0])
    s = torch.full((n_values,), unknown[1])
    for v, t in tissue_of_value.items():
        if t is not None and 0 <= v < n_values:
            m[v], s[v] = means[t], std
    return m, s


# FreeSurfer right-hemisphere aseg ids and their left homologues
_FS_RIGHT_TO_LEFT = {41: 2, 42: 3, 43: 4, 44: 5, 46: 7, 47: 8, 49: 10, 50: 11, 51: 12, 52: 13, 53: 17, 54: 18, 58: 26,
                     60: 28, 62: 30, 63: 31, 45: 6}  # fmt: skip


def lateral_classes(n_values: int, label_space: str) -> Tensor:
    """Intensity classes that pair left/right homologues (right value → left value), identity elsewhere.

    ``freesurfer``: aseg pairs (41→2, 42→3, …) and cortical parcels 2xxx→1xxx; ``brainparc``: indices 1–96 are
    left (odd) / right (even) pairs (spec §2.3); ``tissue``: identity.
    """
    cls = torch.arange(n_values)
    if label_space == "freesurfer":
        for r, left in _FS_RIGHT_TO_LEFT.items():
            if r < n_values:
                cls[r] = left
        if n_values > 2000:
            ctx = torch.arange(2000, min(n_values, 3000))
            cls[ctx] = ctx - 1000
    elif label_space == "brainparc":
        even = torch.arange(2, max(2, min(n_values, 97)), 2)
        cls[even] = even - 1
    elif label_space != "tissue":
        raise ValueError(f"unknown label space {label_space!r}")
    return cls
