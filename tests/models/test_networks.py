"""Blocks, geometry, forward shapes and value ranges of the light presets (no official-size forward here)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from brainparc.models import PRESETS, AutoStripNet, BrainParcNet, available_models, build
from brainparc.models.blocks import IBN, ResidualBlock, crop_resize, exact_fov_box


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_available_models() -> None:
    names = [f"{net}-{size}" for net in ("brainparc", "autostrip") for size in ("official", "lite", "tiny")]
    assert available_models() == sorted([*names, "brainparc-atlas"])
    with pytest.raises(ValueError, match="unknown model preset"):
        build("nope")


def test_exact_fov_box_matches_reference() -> None:
    # §1.3: the s-branch field of view is 19.2–76.8 at 96³ and halves at each level; §1.6: 12.8–115.2 for AutoStrip
    assert exact_fov_box(160, 96, 0)[0] == pytest.approx((19.2, 76.8))
    assert exact_fov_box(160, 96, 4)[1] == pytest.approx((1.2, 4.8))
    assert exact_fov_box(160, 128, 0)[2] == pytest.approx((12.8, 115.2))


def test_crop_resize_integer_box_is_slice_then_interpolate() -> None:
    x = torch.randn(1, 3, 48, 48, 48)
    box = ((10, 36), (10, 38), (10, 38))
    ref = F.interpolate(x[:, :, 10:36, 10:38, 10:38], size=(48, 48, 48), mode="trilinear", align_corners=False)
    assert torch.equal(crop_resize(x, box, (48, 48, 48)), ref)


def test_crop_resize_fractional_box() -> None:
    x = torch.randn(2, 3, 24, 20, 16, dtype=torch.float64)
    # a box that is a whole number of voxels away from the integer path must agree away from its clamped border
    ref = F.interpolate(x[:, :, 4:16, 2:18, 3:11], size=(24, 20, 16), mode="trilinear", align_corners=False)
    exact = crop_resize(x, ((4 + 1e-12, 16), (2, 18), (3, 11)), (24, 20, 16))
    torch.testing.assert_close(exact[:, :, 2:-2, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2, 2:-2])
    # linear data is reproduced exactly at the analytic sample positions
    ramp = torch.arange(24, dtype=torch.float64).view(1, 1, 24, 1, 1).expand(1, 1, 24, 4, 4)
    out = crop_resize(ramp, ((4.8, 19.2), (0, 4), (0, 4)), (12, 4, 4))
    expected = 4.8 + (torch.arange(12, dtype=torch.float64) + 0.5) * 1.2 - 0.5
    torch.testing.assert_close(out[0, 0, :, 0, 0], expected)


def test_ibn_and_residual_block() -> None:
    ibn = IBN(5)
    assert ibn.IN.num_features == 2 and ibn.BN.num_features == 3 and ibn.IN.affine
    assert sorted(ibn.state_dict()) == sorted(
        ["IN.weight", "IN.bias", "BN.weight", "BN.bias", "BN.running_mean", "BN.running_var", "BN.num_batches_tracked"]
    )
    block = ResidualBlock(4, 3, norm="ibn")
    assert [type(b.bn).__name__ for b in block.do] == ["IBN", "IBN", "BatchNorm3d"]
    assert isinstance(block.do[-1].act, torch.nn.Identity) and isinstance(block.do[0].act, torch.nn.LeakyReLU)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(widths=(8, 16, 32, 64)), "widths"),
        (dict(res_depths=(1, 1, 0, 1)), "res_depths"),
        (dict(bottleneck_depth=0), "bottleneck_depth"),
        (dict(patch_size=160, valid_size=100), "divisible"),
        (dict(patch_size=161, valid_size=96), "even"),
        (dict(patch_size=96, valid_size=96), "valid_size < patch_size"),
        (dict(fusion_crops={"fusion_16": [[0, 1]] * 3}), "missing"),
    ],
)
def test_brainparc_constructor_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BrainParcNet(**{"widths": (2, 2, 2, 2, 2), "res_depths": (1, 1, 1, 1), "bottleneck_depth": 1, **kwargs})


def test_crop_out_of_bounds_rejected() -> None:
    crops = {k: [[0, 6]] * 3 for k in ("fusion_32", "fusion_64", "fusion_128", "fusion_256")}
    crops |= {k: [[0, 6]] * 3 for k in ("fusion_up_256", "fusion_up_128", "fusion_up_64", "fusion_up_32")}
    with pytest.raises(ValueError, match="fusion_256"):
        AutoStripNet(widths=(2, 2, 2, 2, 2), res_depths=(1, 1, 1, 1), patch_size=80, valid_size=64, fusion_crops=crops)


def _check_probabilities(out: tuple[torch.Tensor, ...], sigmoid: tuple[int, ...], softmax: tuple[int, ...]) -> None:
    for i in sigmoid:
        assert torch.all((out[i] > 0) & (out[i] < 1))
    for i in softmax:
        torch.testing.assert_close(out[i].sum(dim=1), torch.ones_like(out[i][:, 0]), atol=1e-5, rtol=0)
        assert torch.all(out[i] >= 0)


@pytest.fixture(scope="module")
def tiny_cascade_run() -> tuple[BrainParcNet, tuple[torch.Tensor, ...], dict]:
    """One forward of brainparc-tiny (the slow part of this module, done once), recording the tissue-stage inputs."""
    torch.manual_seed(0)
    net = build("brainparc-tiny").eval()
    seen: dict = {}
    net.Tissue.register_forward_pre_hook(lambda _mod, args: seen.update(tissue=args))
    net.Parc.register_forward_pre_hook(lambda _mod, args: seen.update(parc=args))
    with torch.inference_mode():
        out = net(torch.randn(1, 2, 80, 80, 80))
    return net, out, seen


def test_brainparc_tiny_forward(tiny_cascade_run) -> None:
    net, out, _ = tiny_cascade_run
    assert (net.patch_size, net.valid_size, net.in_channels, net.out_channels) == (80, 48, 2, 107)
    assert net.preset == "brainparc-tiny"
    assert [tuple(o.shape) for o in out] == [(1, c, 48, 48, 48) for c in (4, 4, 4, 4, 107, 107)]
    _check_probabilities(out, sigmoid=(0, 1), softmax=(2, 3, 4, 5))
    with pytest.raises(ValueError, match="80³ patch"):
        net(torch.randn(1, 2, 64, 64, 64))


def test_cascade_passes_probabilities_between_stages(tiny_cascade_run) -> None:
    _, out, seen = tiny_cascade_run
    _x, extra_s, extra_b = seen["tissue"]
    assert torch.equal(extra_s, out[0][:, 1:4]) and torch.equal(extra_b, out[1][:, 1:4])
    _x, extra_s, extra_b = seen["parc"]
    assert torch.equal(extra_s, out[2][:, 1:4]) and torch.equal(extra_b, out[3][:, 1:4])


def test_autostrip_tiny_forward() -> None:
    net = build("autostrip-tiny").eval()
    with torch.inference_mode():
        out = net(torch.randn(1, 1, 80, 80, 80))
    assert [tuple(o.shape) for o in out] == [(1, 2, 64, 64, 64)] * 2
    _check_probabilities(out, sigmoid=(), softmax=(0, 1))


def test_training_step_runs_backward() -> None:
    net = AutoStripNet(widths=(2, 2, 4, 4, 4), res_depths=(1, 1, 1, 2), patch_size=40, valid_size=32).train()
    s, b = net(torch.randn(2, 1, 40, 40, 40))
    (s[:, 1].mean() + b[:, 1].mean()).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_integer_crop_table_on_small_geometry() -> None:
    # official-style integer crops (outward-rounded exact field of view) work on any geometry
    crops = {}
    for name, level in {"fusion_16": 0, "fusion_32": 1, "fusion_64": 2, "fusion_128": 3, "fusion_256": 4}.items():
        lo, hi = exact_fov_box(40, 32, level)[0]
        crops[name] = [[math.floor(lo), math.ceil(hi)]] * 3
    crops |= {f"fusion_up_{w}": crops[f"fusion_{w // 2}"] for w in (256, 128, 64, 32)}
    net = BrainParcNet(widths=(2, 2, 4, 4, 4), res_depths=(1, 1, 1, 1), bottleneck_depth=1, patch_size=40,
                       valid_size=32, fusion_crops=crops, head_kernel_size=1, head_hidden=4).eval()  # fmt: skip
    assert net.Parc.crops["fusion_16"] == ((3, 29),) * 3
    with torch.inference_mode():
        assert net(torch.randn(1, 2, 40, 40, 40))[4].shape == (1, 107, 32, 32, 32)


def test_lite_presets_sizes() -> None:
    with torch.device("meta"):
        parc, strip = build("brainparc-lite"), build("autostrip-lite")
    n_parc = sum(p.numel() for p in parc.parameters())
    n_strip = sum(p.numel() for p in strip.parameters())
    assert 2 * (n_parc + n_strip) <= 25_000_000  # both fp16 files together ≤ 25 MB
    assert (parc.patch_size, parc.valid_size, strip.patch_size, strip.valid_size) == (160, 96, 160, 128)
    assert PRESETS["brainparc-lite"].kwargs["fusion_crops"] is None


def test_lite_widths_forward_on_small_geometry() -> None:
    # the lite architecture (widths, depths, head) on a 40³ window: cheap stand-in for the 160³ forward
    kwargs = {**PRESETS["brainparc-lite"].kwargs, "patch_size": 40, "valid_size": 32}
    with torch.inference_mode():
        out = BrainParcNet(**kwargs).eval()(torch.randn(1, 2, 40, 40, 40))
    _check_probabilities(out, sigmoid=(0, 1), softmax=(2, 3, 4, 5))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brainparc-lite", "autostrip-lite"])
def test_lite_forward_full_window(name: str) -> None:
    net = build(name).eval()
    with torch.inference_mode():
        out = net(torch.randn(1, net.in_channels, 160, 160, 160))
    assert all(o.shape[2:] == (net.valid_size,) * 3 for o in out)


def test_cascade_can_skip_the_unused_big_parcel_head():
    import torch

    from brainparc.models import build

    torch.manual_seed(0)
    net = build("brainparc-tiny").eval()
    x = torch.randn(1, 2, net.patch_size, net.patch_size, net.patch_size)
    with torch.inference_mode():
        full = net(x)
        lean = net(x, parc_b=False)
    assert lean[5] is None and full[5] is not None
    for a, b in zip(full[:5], lean[:5], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
