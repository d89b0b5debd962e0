"""Stitching tests with analytic predictors (architecture habit 8, MONAI's test_sliding_window_inference)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from brainparc.inference.sliding_window import (
    FIXED_POINT,
    FIXED_POINT_SCALE,
    Reduced,
    _extract_window,
    blend_weights,
    normalise_roi,
    official_window_starts,
    plan_windows,
    sliding_window,
    window_starts,
)
from tests.inference.fakes import centre

P, V = 24, 16  # small stand-ins for 160/96: same structure, fast


def identity_plus(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two outputs: the valid-region crop of the input, and that crop + 1."""
    c = centre(x, P, V)
    return c, c + 1


def background(shape, channels: int) -> torch.Tensor:
    out = torch.zeros((channels, *shape))
    out[0] = 1
    return out


def expected(image: torch.Tensor, roi, add: float = 0.0) -> torch.Tensor:
    """Input (+ add) inside the ROI, background outside."""
    out = background(image.shape[1:], image.shape[0])
    sl = (slice(None), *normalise_roi(roi, image.shape[1:]))
    out[sl] = image[sl] + add
    return out


SHAPES = [
    (37, 41, 29),  # odd, non-cubic, larger than a window
    (10, 40, 33),  # smaller than the valid region in one axis
    (7, 9, 5),  # smaller than the valid region in all axes
    (16, 24, 17),  # exactly one valid region / one patch along some axes
]
ROIS = [None, ((3, 30), (5, 41), (0, 20))]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("roi", ROIS)
@pytest.mark.parametrize(("overlap", "batch_size"), [(0.0, 1), (0.5, 3), (0.75, 1), (0.25, 3)])
def test_identity_reconstructs_float32(shape, roi, overlap, batch_size):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand((2, *shape), generator=gen)
    roi = None if roi is None else [(a, min(b, s)) for (a, b), s in zip(roi, shape, strict=True)]
    out_a, out_b = sliding_window(
        identity_plus,
        image,
        patch_size=P,
        valid_size=V,
        overlap=overlap,
        roi=roi,
        batch_size=batch_size,
        accum_dtype=torch.float32,
    )
    assert out_a.dtype == torch.float32 and out_a.shape == image.shape
    torch.testing.assert_close(out_a, expected(image, roi), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_b, expected(image, roi, add=1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blend", ["hann", "gaussian", "constant"])
def test_fp16_accumulator_error_bound(blend):
    """float16 sums of probabilities: |error| ≤ n·2⁻¹¹·p + 1e-4 where n = windows covering the voxel.

    Each window adds one float16 rounding of relative size ≤ 2⁻¹¹ of the running sum (addcmul_ computes in float32);
    the 1e-4 covers subnormal products at floor weights. Measured here (n up to 27): max 2.4e-3 (hann) to 4.1e-3
    (gaussian), mean ≈ 6e-5. The predictor therefore keeps the 4 tissue probabilities in float32 and uses float16
    only for the 107-channel sums that are reduced to argmax labels.
    """
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(4 * torch.randn((5, 40, 33, 35), generator=gen), dim=0)
    (out,) = sliding_window(
        lambda x: (centre(x, P, V),), probs, patch_size=P, valid_size=V, overlap=0.5, blend=blend, batch_size=4
    )
    count = torch.zeros(probs.shape[1:])
    for corner in plan_windows(probs.shape[1:], patch_size=P, valid_size=V, overlap=0.5):
        count[tuple(slice(c, c + V) for c in corner)] += 1
    err = (out - probs).abs()
    assert bool((err <= count * 2.0**-11 * probs + 1e-4).all())
    assert float(err.max()) <= 5e-3 and float(err.mean()) <= 2e-4
    (exact,) = sliding_window(
        lambda x: (centre(x, P, V),), probs, patch_size=P, valid_size=V, blend=blend, accum_dtype=torch.float32
    )
    assert float((exact - probs).abs().max()) <= 1e-5


def test_fp16_bf16_predict_outputs_are_accepted():
    """Autocast on CUDA yields bfloat16 outputs; accumulation promotes them without error."""
    image = torch.rand((1, 20, 20, 20))
    (out,) = sliding_window(
        lambda x: centre(x, P, V).to(torch.bfloat16), image, patch_size=P, valid_size=V, accum_dtype=torch.float32
    )
    torch.testing.assert_close(out, image, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("roi", ROIS)
def test_constant_model_and_reductions(roi):
    shape = (37, 41, 29)
    const = torch.tensor([0.1, 0.2, 0.7])

    def predict(x):
        return const.view(1, 3, 1, 1, 1).expand(x.shape[0], 3, V, V, V)

    image = torch.zeros((1, *shape))
    probs, labels, with_prob = sliding_window(
        lambda x: (predict(x), predict(x), predict(x)),
        image,
        patch_size=P,
        valid_size=V,
        roi=roi,
        reduce=[None, "argmax", "argmax+maxprob"],
    )
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[normalise_roi(roi, shape)] = True
    fp16 = 5e-3  # float16 accumulation, see test_fp16_accumulator_error_bound
    for c in range(3):
        assert torch.allclose(probs[c][inside], const[c], atol=fp16)
        assert bool((probs[c][~inside] == float(c == 0)).all())
    assert isinstance(labels, Reduced) and labels.max_prob is None and labels.labels.dtype == torch.uint8
    assert bool((labels.labels[inside] == 2).all()) and bool((labels.labels[~inside] == 0).all())
    assert torch.equal(with_prob.labels, labels.labels)
    assert torch.allclose(with_prob.max_prob[inside], torch.tensor(0.7), atol=fp16)
    assert bool((with_prob.max_prob[~inside] == 1).all())


@pytest.mark.parametrize("shape", [(30, 20, 17), (40, 41, 33), (16, 30, 25)])
def test_official_tiling_matches_literal_reference(shape):
    """tiling/blend='official' gives the argmax of the reference's padded Hann-weighted float64 sum (spec §3.4)."""
    gen = torch.Generator().manual_seed(2)
    image = torch.rand((2, *shape), generator=gen)
    scales = torch.linspace(1, 6, 5).view(1, 5, 1, 1, 1)

    def predict(x):
        c = centre(x, P, V)
        return (torch.softmax(torch.sin(scales * c[:, :1] * 7) + c[:, 1:] * scales, dim=1),)

    (ours,) = sliding_window(
        predict,
        image,
        patch_size=P,
        valid_size=V,
        tiling="official",
        blend="official",
        accum_dtype=torch.float32,
        reduce="argmax",
    )
    assert torch.equal(ours.labels.long(), _literal_official(predict, image).argmax(0))


def _literal_official(predict, image: torch.Tensor) -> torch.Tensor:
    """The reference loop: pad (P-V)/2, windows every P/2 plus a last one, pad outputs to P³, Hann, float64 sum."""
    pad = (P - V) // 2
    padded = torch.nn.functional.pad(image, (pad,) * 6)
    h = torch.hann_window(P, periodic=False, dtype=torch.float64)
    hann = (h[:, None, None] * h[None, :, None] * h[None, None, :]) / h.max() ** 3
    acc = None
    sizes = padded.shape[1:]
    starts = [[*range(0, s - P, P // 2), s - P] if s > P else [0] for s in sizes]
    for a, b, c in itertools.product(*starts):
        (out,) = predict(padded[None, :, a : a + P, b : b + P, c : c + P])
        full = torch.nn.functional.pad(out[0].double(), (pad,) * 6) * hann
        if acc is None:
            acc = torch.zeros((out.shape[1], *sizes), dtype=torch.float64)
        acc[:, a : a + P, b : b + P, c : c + P] += full
    return acc[:, pad:-pad, pad:-pad, pad:-pad]


def test_official_geometry_spec_values():
    """Spec §9 item 4: padded 272×320×320 → starts {0,80,112}×{0,80,160}²; Hann at the valid border 0.349."""
    assert official_window_starts((208, 256, 256)) == [[0, 80, 112], [0, 80, 160], [0, 80, 160]]
    assert len(plan_windows((208, 256, 256), patch_size=160, valid_size=96, tiling="official")) == 27
    w = blend_weights(96, "official", patch_size=160)
    ratio = float(w[0, 47, 47] / w[47, 47, 47])
    assert ratio == pytest.approx(0.349, abs=1e-3)


def test_window_starts_examples():
    assert window_starts(96, 96, 48) == [0]
    assert window_starts(97, 96, 48) == [0, 1]
    assert window_starts(150, 96, 48) == [0, 27, 54]
    assert window_starts(144, 96, 48) == [0, 48]
    assert window_starts(320, 160, 80, mode="official") == [0, 80, 160]
    with pytest.raises(ValueError):
        window_starts(10, 0, 1)
    with pytest.raises(ValueError):
        window_starts(10, 4, 2, mode="nope")


def test_tiling_covers_roi_property():
    """Random sizes, ROIs, overlaps: every ROI voxel lies in a valid region; steps never exceed the stride."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        valid = int(rng.integers(1, 12))
        patch = valid + 2 * int(rng.integers(0, 4))
        shape = tuple(int(s) for s in rng.integers(1, 40, size=3))
        lo = [int(rng.integers(0, s)) for s in shape]
        roi = [(a, int(rng.integers(a + 1, s + 1))) for a, s in zip(lo, shape, strict=True)]
        overlap = float(rng.choice([0.0, 0.25, 0.5, 0.6]))
        corners = plan_windows(shape, patch_size=patch, valid_size=valid, overlap=overlap, roi=roi)
        covered = np.zeros(shape, dtype=bool)
        for corner in corners:
            covered[tuple(slice(max(c, 0), c + valid) for c in corner)] = True
        assert covered[tuple(slice(a, b) for a, b in roi)].all()
        stride = max(1, round(valid * (1 - overlap)))
        for axis in range(3):
            starts = sorted({c[axis] for c in corners})
            assert all(b - a <= stride for a, b in itertools.pairwise(starts))
            if roi[axis][1] - roi[axis][0] >= valid:  # valid regions stay inside the ROI
                assert starts[0] == roi[axis][0] and starts[-1] + valid == roi[axis][1]


def test_blend_weights_positive_and_peaked():
    for mode in ("hann", "gaussian", "constant"):
        w = blend_weights(16, mode)
        assert w.shape == (16, 16, 16) and w.dtype == torch.float32
        assert float(w.min()) >= 1e-3 and float(w.max()) == pytest.approx(1.0)
        assert torch.equal(w, w.flip(0)) and torch.equal(w, w.permute(2, 0, 1))
    hann = blend_weights(96)
    assert float(hann[0, 0, 0]) == pytest.approx(1e-3) and float(hann[0, 48, 48]) > 2e-4
    with pytest.raises(ValueError):
        blend_weights(16, "official")
    with pytest.raises(ValueError):
        blend_weights(16, "triangle")


def test_extract_window_pads_per_channel():
    image = torch.arange(2 * 5 * 6 * 7, dtype=torch.float32).reshape(2, 5, 6, 7)
    out = _extract_window(image, (-2, 3, 4), 4, torch.tensor([-1.0, -2.0]).view(2, 1, 1, 1))
    assert out.shape == (2, 4, 4, 4)
    assert bool((out[0, :2] == -1).all()) and bool((out[1, :2] == -2).all())
    assert torch.equal(out[:, 2:, :3, :3], image[:, :2, 3:6, 4:7])
    assert bool((out[:, :, 3:] == out[:, :1, 3 : 1 + 1].mean()).all()) or bool((out[0, :, 3:] == -1).all())
    far = _extract_window(image, (50, 0, 0), 4, torch.tensor(0.5))
    assert bool((far == 0.5).all())


def test_pad_value_reaches_the_network():
    image = torch.ones((1, 10, 10, 10))
    seen = []

    def predict(x):
        seen.append(float(x.min()))
        return (centre(x, P, V),)

    sliding_window(predict, image, patch_size=P, valid_size=V, pad_value=-3.0)
    assert min(seen) == -3.0


def test_bad_arguments():
    image = torch.zeros((1, 8, 8, 8))
    ok = {"patch_size": P, "valid_size": V}
    with pytest.raises(ValueError, match="shape"):
        sliding_window(lambda x: (x,), image, **ok)  # wrong output size
    with pytest.raises(ValueError, match=r"\[C, X, Y, Z\]"):
        sliding_window(identity_plus, image[0], **ok)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(identity_plus, image, overlap=1.0, **ok)
    with pytest.raises(ValueError, match="empty roi"):
        sliding_window(identity_plus, image, roi=[(3, 3), (0, 8), (0, 8)], **ok)
    with pytest.raises(ValueError, match="reduce"):
        sliding_window(identity_plus, image, reduce="mean", **ok)
    with pytest.raises(ValueError, match="2 outputs"):
        sliding_window(identity_plus, image, reduce=["argmax"], **ok)
    with pytest.raises(ValueError, match="official"):
        plan_windows((8, 8, 8), patch_size=P, valid_size=V, roi=[(0, 4)] * 3, tiling="official")


def test_progress_bar_runs(capsys):
    (out,) = sliding_window(
        lambda x: centre(x, P, V), torch.rand((1, 20, 20, 20)), patch_size=P, valid_size=V, progress=True
    )
    assert out.shape == (1, 20, 20, 20)
    assert "windows" in capsys.readouterr().err


@pytest.mark.parametrize("blend", ["hann", "official"])
@pytest.mark.parametrize("sparse", [False, True])
def test_fixed_point_accumulator_error_bound(blend, sparse):
    """Fixed-point probabilities: |error| ≤ n / (2·scale) for n covering windows, whatever the weights (float16's
    bound grows with the value and reaches ~2e-3); argmax labels equal the float32 ones but at near-ties."""
    gen = torch.Generator().manual_seed(2)
    probs = torch.softmax(4 * torch.randn((5, 40, 33, 35), generator=gen), dim=0)
    region = torch.rand(probs.shape[1:], generator=gen) > 0.3 if sparse else None
    common = {"patch_size": P, "valid_size": V, "blend": blend, "region": region, "batch_size": 3}
    if blend == "official":
        common["tiling"] = "official"
    reduce = [None, "argmax+maxprob"]

    def predict(x):
        return centre(x, P, V), centre(x, P, V)

    fixed_p, fixed_r = sliding_window(predict, probs, accum_dtype=FIXED_POINT, reduce=reduce, **common)
    exact_p, exact_r = sliding_window(predict, probs, accum_dtype=torch.float32, reduce=reduce, **common)
    tiling = common.get("tiling", "even")
    corners = plan_windows(probs.shape[1:], patch_size=P, valid_size=V, overlap=0.5, tiling=tiling)
    count = torch.zeros(probs.shape[1:])
    for corner in corners:
        count[tuple(slice(max(c, 0), c + V) for c in corner)] += 1
    err = (fixed_p - exact_p).abs()
    assert bool((err <= count / (2 * FIXED_POINT_SCALE) + 1e-6).all()), float(err.max())
    assert 0 < float(err.max()) < 5e-4  # rounded (n ≤ 27 here, ≤ 8 under the official tiling), inside 1e-3
    assert float((fixed_r.labels == exact_r.labels).float().mean()) > 0.999
    torch.testing.assert_close(fixed_r.max_prob, exact_r.max_prob, atol=5e-4, rtol=0)


@pytest.mark.parametrize("accum_dtype", [torch.float32, torch.float16, FIXED_POINT])
def test_region_restricted_accumulators(accum_dtype):
    """With a region, sums live only on region voxels; results there equal the dense path, background elsewhere."""
    shape = (37, 41, 29)
    gen = torch.Generator().manual_seed(4)
    probs = torch.softmax(3 * torch.randn((4, *shape), generator=gen), dim=0)
    region = torch.rand(shape, generator=gen) > 0.4
    roi = [(3, 30), (5, 41), (0, 20)]
    kwargs = {"patch_size": P, "valid_size": V, "roi": roi, "accum_dtype": accum_dtype, "batch_size": 2}
    reduce = [None, "argmax+maxprob"]

    def predict(x):
        return centre(x, P, V), centre(x, P, V)

    dense_p, dense_r = sliding_window(predict, probs, reduce=reduce, **kwargs)
    sparse_p, sparse_r = sliding_window(predict, probs, reduce=reduce, region=region, **kwargs)
    keep = torch.zeros(shape, dtype=torch.bool)
    keep[normalise_roi(roi, shape)] = True
    keep &= region
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, FIXED_POINT: 2e-4}[accum_dtype]
    torch.testing.assert_close(sparse_p[:, keep], dense_p[:, keep], atol=tol, rtol=0)
    torch.testing.assert_close(sparse_p[:, keep], probs[:, keep], atol=5 * tol, rtol=0)
    assert bool((sparse_p[0, ~keep] == 1).all()) and bool((sparse_p[1:, ~keep] == 0).all())
    agree = (sparse_r.labels[keep] == dense_r.labels[keep]).float().mean()
    assert float(agree) > 0.999  # float16 near-ties may flip
    assert bool((sparse_r.labels[~keep] == 0).all()) and bool((sparse_r.max_prob[~keep] == 1).all())
    with pytest.raises(ValueError, match="region shape"):
        sliding_window(predict, probs, region=region[1:], **kwargs)
