"""The inference recipes: selection, the CLI's copy of the names, and the reference recipe's resampled sums."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from brainparc.inference.recipes import RECIPE_CHOICES, RECIPES, recipe_for
from brainparc.inference.sliding_window import FIXED_POINT, Reduced, Resample, sliding_window
from tests.inference.fakes import centre

P, V = 24, 16


def test_official_weights_pick_the_reference_recipe_unless_asked():
    assert recipe_for({"source": "official"}).name == "reference"
    for source in ("bundled", "file", None):
        assert recipe_for({"source": source}).name == "fast"
    assert recipe_for({"source": "official"}, "fast").name == "fast"
    assert recipe_for({"source": "bundled"}, "reference").name == "reference"
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_for({}, "slow")


def test_cli_choices_match_the_table():
    from brainparc.cli.parser import RECIPES as CLI_RECIPES

    assert CLI_RECIPES == RECIPE_CHOICES


def test_reference_recipe_is_the_published_inference():
    ref = RECIPES["reference"]
    assert not ref.bias_correct and not ref.crop_to_head and not ref.mask_labels and not ref.cuda_amp
    assert (ref.grid_anchor, ref.edge_dtype, ref.refine, ref.strip_cleanup) == (
        "origin",
        "float32",
        "sequential",
        "largest-component",
    )
    assert ref.official_tiling and ref.strip_official_tiling and ref.resample_probabilities and ref.strip_native_grid
    # both recipes name every field: the pipeline never falls back to a hidden default
    assert set(RECIPES["fast"].to_dict()) == {f.name for f in dataclasses.fields(ref)}


def smooth_probs(x: torch.Tensor) -> tuple[torch.Tensor]:
    """Three-class softmax of the valid region's intensity: a smooth, position-dependent probability map."""
    v = centre(x, P, V)[:, :1]
    return (torch.softmax(torch.cat([v, 2 * v, -v], dim=1), dim=1),)


def test_resampled_sums_are_the_trilinear_resampling_of_the_raw_sums():
    """One window (image = valid region): the sums are p·W with W the official weights. Resampled, normalised by the
    resampled W, they equal F.interpolate(p·W) / F.interpolate(W); the labels are argmax F.interpolate(p·W), the
    reference's rule (spec §3.4 step 7). Size-based interpolation: model index (i + ½)·n_model/n_out − ½."""
    from brainparc.inference.sliding_window import blend_weights

    gen = torch.Generator().manual_seed(0)
    image = torch.rand((1, V, V, V), generator=gen)
    common = {"patch_size": P, "valid_size": V, "accum_dtype": torch.float32, "tiling": "official", "blend": "official"}
    (blended,) = sliding_window(smooth_probs, image, **common)
    out_shape = (20, 17, 13)
    scale = tuple(m / V for m in out_shape)
    offset = tuple((s - 1) / 2 for s in scale)  # model index = (i - offset) / scale
    resample = Resample(scale, offset, out_shape)
    (probs,) = sliding_window(smooth_probs, image, resample=resample, **common)
    (labels,) = sliding_window(smooth_probs, image, resample=resample, reduce="argmax", **common)
    weights = blend_weights(V, "official", patch_size=P)[None]

    def interp(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t[None], size=out_shape, mode="trilinear", align_corners=False)[0]

    sums = interp(blended * weights)
    torch.testing.assert_close(probs, sums / interp(weights), atol=1e-5, rtol=1e-5)
    assert isinstance(labels, Reduced)
    assert torch.equal(labels.labels.long(), sums.argmax(0))
    # the reference recipe's parcel sums are fixed-point probabilities: read back as p·W, resampled the same way
    (fixed,) = sliding_window(smooth_probs, image, resample=resample, **common | {"accum_dtype": FIXED_POINT})
    torch.testing.assert_close(fixed, probs, atol=1e-4, rtol=0)


def test_identity_resample_is_exact_and_region_outside_is_background():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand((1, 30, 26, 20), generator=gen)
    region = torch.zeros(image.shape[1:], dtype=torch.bool)
    region[5:25, 4:20, 3:15] = True
    common = {"patch_size": P, "valid_size": V, "accum_dtype": torch.float32, "tiling": "official", "blend": "official"}
    (plain,) = sliding_window(smooth_probs, image, region=region, **common)
    identity = Resample((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(image.shape[1:]))
    (resampled,) = sliding_window(smooth_probs, image, region=region, resample=identity, **common)
    torch.testing.assert_close(resampled, plain, atol=1e-6, rtol=0)
    assert torch.all(resampled[0][~region] == 1)
    with pytest.raises(ValueError, match="whole image"):
        sliding_window(
            smooth_probs, image, roi=((0, 10), (0, 10), (0, 10)), resample=identity, patch_size=P, valid_size=V
        )


def test_windows_outside_the_region_are_skipped():
    calls = []

    def counting(x: torch.Tensor) -> tuple[torch.Tensor]:
        calls.append(x.shape[0])
        return smooth_probs(x)

    image = torch.rand((1, 60, 30, 30))
    region = torch.zeros(image.shape[1:], dtype=torch.bool)
    region[:10] = True
    common = {"patch_size": P, "valid_size": V, "tiling": "official", "blend": "official", "region": region}
    (kept,) = sliding_window(counting, image, skip_outside_region=True, **common)
    skipped_calls = len(calls)
    (full,) = sliding_window(counting, image, **common)
    assert skipped_calls < len(calls) - skipped_calls
    torch.testing.assert_close(kept[:, region], full[:, region])
