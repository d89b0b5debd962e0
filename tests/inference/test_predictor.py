"""predict_parcellation / predict_brain_mask with fake networks (no dependency on brainparc.models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainparc.inference import predictor as predictor_module
from brainparc.inference.predictor import bounding_roi, dilated_region, predict_brain_mask, predict_parcellation
from brainparc.inference.sliding_window import official_window_starts
from tests.inference.fakes import FakeAutoStrip, FakeCascade

CARD = {"normalisation": "official-zscore", "task": "parc"}
SHAPE = (41, 37, 30)


def phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensity in [0, 3.5] inside an ellipsoid (0 outside), an edge channel, and the ellipsoid mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    mask = ((grid / np.array([0.6, 0.5, 0.7])[:, None, None, None]) ** 2).sum(0) < 1
    intensity = np.where(mask, rng.uniform(0, 3.5, SHAPE), 0).astype(np.float32)
    edge = rng.normal(size=SHAPE).astype(np.float32)
    return intensity, edge, mask


def expected_maps(intensity: np.ndarray, roi) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form outputs of FakeCascade: nearest tissue centre (0..3) and nearest parcel centre (k / 10)."""
    tissue = np.zeros(intensity.shape, np.int16)
    parc = np.zeros(intensity.shape, np.int16)
    tissue[roi] = np.clip(np.rint(intensity[roi]), 0, 3)
    parc[roi] = np.clip(np.rint(intensity[roi] * 10), 0, 106)
    return tissue, parc


@pytest.mark.parametrize("batch_size", [1, 3])
def test_parcellation_closed_form(batch_size):
    intensity, edge, mask = phantom()
    model = FakeCascade().train()
    res = predict_parcellation(
        model, intensity, edge, CARD, mask=mask, device="cpu", normalise=False, batch_size=batch_size, confidence=True
    )
    roi = bounding_roi(mask, 8)
    assert res.roi == roi and res.device == "cpu"
    assert model.calls == -(-res.n_windows // batch_size)
    assert not any(model.training_flags), "the model must run in eval mode"
    tissue, parc = expected_maps(intensity, roi)
    assert res.tissue.dtype == np.int16 and res.parc.dtype == np.int16
    assert res.tissue_probs.dtype == np.float32 and res.tissue_probs.shape == (4, *SHAPE)
    # voxels exactly half-way between two centres can go either way
    ambiguous = np.abs(np.abs(intensity * 10 - np.rint(intensity * 10)) - 0.5) < 0.05
    assert np.array_equal(res.tissue, tissue)
    assert np.mean(res.parc[~ambiguous] == parc[~ambiguous]) == 1.0
    np.testing.assert_allclose(res.tissue_probs.sum(0), 1, atol=1e-5)
    outside = np.ones(SHAPE, bool)
    outside[roi] = False
    assert (res.tissue_probs[0][outside] == 1).all() and (res.parc[outside] == 0).all()
    assert res.parc_confidence is not None and (res.parc_confidence[outside] == 1).all()
    assert (res.parc_confidence[roi] > 0).all()


def test_restrict_to_mask_keeps_only_the_dilated_mask():
    intensity, edge, mask = phantom()
    noisy = np.where(mask, intensity, 2.0).astype(np.float32)  # tissue class 2 everywhere outside the brain
    kwargs = {"mask": mask, "device": "cpu", "normalise": False, "roi_margin": 3}
    full = predict_parcellation(FakeCascade(n_parcels=8), noisy, edge, CARD, restrict_to_mask=False, **kwargs)
    kept = predict_parcellation(FakeCascade(n_parcels=8), noisy, edge, CARD, **kwargs)
    region = dilated_region(mask, full.roi, 3)
    assert np.array_equal(kept.tissue[region], full.tissue[region])
    assert (kept.tissue[~region] == 0).all() and (kept.tissue_probs[0][~region] == 1).all()
    assert (full.tissue[full.roi][~region[full.roi]] == 2).all()


def test_windows_outside_the_kept_region_are_skipped_without_changing_outputs(monkeypatch):
    """Two blobs in opposite corners: the windows between them hold none of the kept sums, so they are skipped, and
    the maps are identical to a run that computes them."""
    shape = (64, 64, 48)
    mask = np.zeros(shape, bool)
    mask[4:14, 4:14, 4:14] = mask[50:60, 50:60, 34:44] = True
    rng = np.random.default_rng(1)
    intensity = np.where(mask, rng.uniform(0, 3.5, shape), 0).astype(np.float32)
    edge = rng.normal(size=shape).astype(np.float32)
    kwargs = {"mask": mask, "device": "cpu", "normalise": False, "roi_margin": 2, "overlap": 0.0}
    skipped = predict_parcellation(FakeCascade(), intensity, edge, CARD, **kwargs)
    plain = predictor_module._window_kwargs

    def no_skip(*args):
        return {**plain(*args), "skip_outside_region": False}

    monkeypatch.setattr(predictor_module, "_window_kwargs", no_skip)
    every = predict_parcellation(FakeCascade(), intensity, edge, CARD, **kwargs)
    assert skipped.n_windows < every.n_windows
    np.testing.assert_array_equal(skipped.tissue_probs, every.tissue_probs)
    np.testing.assert_array_equal(skipped.parc, every.parc)


def test_roi_from_nonzero_intensity_without_mask():
    intensity, edge, _ = phantom()
    res = predict_parcellation(FakeCascade(), intensity, edge, CARD, device="cpu", normalise=False, roi_margin=2)
    assert res.roi == bounding_roi(intensity != 0, 2)
    assert res.parc_confidence is None


def test_official_geometry_covers_whole_image():
    intensity, edge, _ = phantom()
    res = predict_parcellation(
        FakeCascade(),
        intensity,
        edge,
        CARD,
        device="cpu",
        normalise=False,
        official_geometry=True,
        restrict_to_mask=False,
    )
    tissue, _ = expected_maps(intensity, tuple(slice(0, s) for s in SHAPE))
    assert np.array_equal(res.tissue, tissue)
    # padded 49/45/38 with P = 24, stride 12: starts {0,12,24,25} × {0,12,21} × {0,12,14}
    assert official_window_starts(SHAPE, 24, 16) == [[0, 12, 24, 25], [0, 12, 21], [0, 12, 14]]
    assert res.n_windows == 36
    assert res.roi == tuple(slice(0, s) for s in SHAPE)


def test_normalisation_follows_the_card():
    intensity_module = pytest.importorskip("brainparc.core.intensity")
    intensity, edge, mask = phantom()
    raw, raw_edge = intensity * 300 + 20 * mask, edge * 50
    for recipe in ("official-zscore", "in-mask-zscore"):
        card = {"normalisation": recipe}
        got = predict_parcellation(FakeCascade(n_parcels=8), raw, raw_edge, card, mask=mask, device="cpu")
        pre = [intensity_module.normalise(a, recipe, mask=mask) for a in (raw, raw_edge)]
        want = predict_parcellation(FakeCascade(n_parcels=8), *pre, card, mask=mask, device="cpu", normalise=False)
        assert np.array_equal(got.parc, want.parc) and np.array_equal(got.tissue, want.tissue)


def test_bad_inputs():
    intensity, edge, mask = phantom()
    with pytest.raises(ValueError, match="same shape"):
        predict_parcellation(FakeCascade(), intensity, edge[:-1], CARD, device="cpu", normalise=False)
    with pytest.raises(ValueError, match="mask shape"):
        predict_parcellation(FakeCascade(), intensity, edge, CARD, mask=mask[1:], device="cpu", normalise=False)
    with pytest.raises(ValueError, match="no non-zero voxel"):
        predict_parcellation(FakeCascade(), intensity * 0, edge, CARD, device="cpu", normalise=False)
    with pytest.raises(TypeError, match="patch_size"):
        predict_parcellation(torch.nn.Identity(), intensity, edge, CARD, device="cpu", normalise=False)


def test_parcellation_oom_fallback(monkeypatch):
    """A CUDA OOM inside the network reruns the whole sliding window on the CPU and reports it."""
    intensity, edge, mask = phantom()
    model = FakeCascade()
    real_forward, real_sliding_window = model.forward, predictor_module.sliding_window
    state = {"raised": False}

    def flaky_forward(x, **kwargs):
        if not state["raised"]:
            state["raised"] = True
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return real_forward(x, **kwargs)

    def fake_gpu_sliding_window(predict, image, *, device, **kwargs):
        return real_sliding_window(predict, image, device="cpu", **kwargs)  # a "GPU" that is really the CPU

    monkeypatch.setattr(model, "forward", flaky_forward)
    monkeypatch.setattr(predictor_module, "sliding_window", fake_gpu_sliding_window)
    monkeypatch.setattr(predictor_module, "resolve_device", lambda spec: torch.device("cuda"))
    monkeypatch.setattr(model, "to", lambda dev: model)  # no CUDA build here: moving the fake is a no-op
    monkeypatch.setattr(predictor_module, "accumulator_device", lambda dev, n: torch.device("cpu"))
    with pytest.warns(RuntimeWarning, match="rerunning on the CPU"):
        res = predict_parcellation(model, intensity, edge, CARD, mask=mask, device="cuda", normalise=False, amp=False)
    assert res.device == "cpu"
    assert np.array_equal(res.tissue, expected_maps(intensity, res.roi)[0])


def test_brain_mask_probability():
    intensity, _, mask = phantom()
    image = np.where(mask, intensity - 1.5, 0).astype(np.float32)
    prob = predict_brain_mask(FakeAutoStrip(), image, {"normalisation": "minmax"}, device="cpu", normalise=False)
    roi = bounding_roi(image != 0, 8)
    assert prob.dtype == np.float32 and prob.shape == SHAPE
    np.testing.assert_allclose(prob[roi], 1 / (1 + np.exp(-image[roi])), atol=1e-5)
    outside = np.ones(SHAPE, bool)
    outside[roi] = False
    assert (prob[outside] == 0).all()


def test_brain_mask_with_card_normalisation():
    pytest.importorskip("brainparc.core.intensity")
    intensity, _, mask = phantom()
    prob = predict_brain_mask(FakeAutoStrip(), intensity * 100, {"normalisation": "minmax"}, mask=mask, device="cpu")
    assert prob.shape == SHAPE and 0 <= prob.min() and prob.max() <= 1


def test_tiny_preset_if_models_exist():
    """One window of the real brainparc-tiny cascade (an 80³ forward takes seconds on 2 cores)."""
    models = pytest.importorskip("brainparc.models")
    if not hasattr(models, "build"):
        pytest.skip("brainparc.models.build not available yet")
    try:
        model = models.build("brainparc-tiny")
    except (KeyError, ValueError) as err:  # registry not there yet
        pytest.skip(f"brainparc-tiny preset not available: {err}")
    shape = (model.valid_size, model.valid_size - 8, model.valid_size - 5)
    rng = np.random.default_rng(0)
    intensity = rng.normal(size=shape).astype(np.float32)
    edge = np.abs(rng.normal(size=shape)).astype(np.float32)
    res = predict_parcellation(model, intensity, edge, {"normalisation": "official-zscore"}, device="cpu")
    assert res.n_windows == 1 and res.tissue.shape == shape and res.parc.shape == shape
    assert res.parc.min() >= 0 and res.parc.max() <= 106 and res.tissue.max() <= 3
    np.testing.assert_allclose(res.tissue_probs.sum(0), 1, atol=1e-4)


def test_accumulators_stay_on_the_gpu_only_when_they_fit():
    """The sums move to the GPU when they need at most half of its free memory; the CPU keeps them otherwise."""
    from brainparc.inference.predictor import accumulator_device

    gpu, gib = torch.device("cuda:0"), 2**30
    assert accumulator_device(gpu, 1 * gib, free_bytes=4 * gib) == gpu
    assert accumulator_device(gpu, 3 * gib, free_bytes=4 * gib) == torch.device("cpu")
    assert accumulator_device(torch.device("cpu"), 0) == torch.device("cpu")


def test_parcellation_asks_for_accumulators_of_its_size(monkeypatch):
    """The estimate passed to accumulator_device counts 4 float32 tissue + 107 float16 parcel sums per region voxel."""
    seen = []
    real = predictor_module.accumulator_device
    monkeypatch.setattr(predictor_module, "accumulator_device", lambda dev, n, **kw: seen.append(n) or real(dev, n))
    shape = (40, 40, 40)
    mask = np.zeros(shape, bool)
    mask[10:30, 10:30, 10:30] = True
    img = mask.astype(np.float32)
    predict_parcellation(FakeCascade(), img, img, {"normalisation": "in-mask-zscore"}, mask=mask, device="cpu")
    roi = bounding_roi(mask, 8)
    roi_voxels = int(np.prod([s.stop - s.start for s in roi]))
    region = int(dilated_region(mask, roi, 8).sum())
    assert seen == [roi_voxels * 12 + region * (4 * 4 + 2 * 107)]
