"""Parity of the ``reference`` recipe with the published inference scripts (marker ``parity``; ``pytest -m parity``).

Same random official-size weights (every BatchNorm statistic randomised) in the published networks and in ours; the
published ``Step02_BrainParc.get_pred`` / ``Step02_AutoStrip_Skull_Stripping.get_pred`` and our pipeline run on the
same small crops of real images, one 160³ window each (the published tiling fails on smaller images, spec §7 item
24). Compared: the blended sums on the model grid (all 107 + 4 channels, as probabilities), the final tissue and
parcel labels after the published ``_dk_refine`` and our sequential refinement, and the AutoStrip probability and mask.

Deliberate differences, each measured here rather than hidden (docs/models.md, "The reference recipe"):

* spec §7 item 23: the published script maps the 0.8 mm maps back by size-based ``F.interpolate``; we resample in
  physical space. For the 1 mm case the labels are compared (a) with the published output, agreement reported, and
  (b) with the published model-grid sums resampled in physical space by this harness (``grid_sample``), refined by
  the published ``_dk_refine``: ≥ 99.9 %. The published ``_dk_refine`` raises when one of its 28 labels is absent
  (random weights on a crop give a handful of parcels) and the script's bare try/except then keeps the map
  unrefined; ours refines the labels that are present. The harness catches it the same way, reports it
  (``published_refine_raised``) and then refines its labels with our sequential refinement before comparing.
* spec §7 item 20: float32 tissue sums instead of float64 (differences ~1e-7 of the sums) and fixed-point parcel
  probabilities (``FIXED_POINT``: differences ≤ n / 64,000 for n covering windows, ≤ 1.25e-4 here). A parcel label
  can then differ only where the published top-two probabilities are within 2 × 1.25e-4 (``NEAR_TIE``). A random
  network's 107 parcel probabilities are near-uniform (top-two margins below 2.5e-4 on ~80 % of the voxels), which
  no trained network gives, so the BrainParc tests run twice: with the random network as it is (``random``: labels
  asserted equal on the voxels that are not near-ties, ≥ 10 % of them; all-voxel agreement reported) and with its
  parcel output layer scaled ×200 in both implementations (``confident``: trained-like, peaked probabilities; all
  voxels ≥ 99.9 %).
* the Sobel edge is our numpy port of ITK's filter (≤ 2e-5 from SimpleITK, spec §3.3) and the 0.8 mm resampling our
  scipy interpolation, not SimpleITK's: both shift the network input by ~1e-5.

Needs ``../shared/reference`` (or ``BRAINPARC_SHARED_REFERENCE``), ``../shared/data`` and the ``parity`` extra
(SimpleITK, scikit-image, which the published scripts import); skips cleanly otherwise. About 6-10 minutes on 2 CPU
cores: five official-size network windows per implementation.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA
from tests.parity.published import (
    AUTOSTRIP_SCRIPT,
    BRAINPARC_SCRIPT,
    REFERENCE,
    autostrip_args,
    brainparc_args,
    brainparc_weight_sum,
    capture_get_pred,
    load_script,
    published_network,
)

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"published code not found at {REFERENCE}"),
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}"),
]

SUB005 = SHARED_DATA / "brainparc" / "sub005_adult" / "brain.nii.gz"
PSEUDO = SHARED_DATA / "brainparc" / "autostrip" / "sub001_infant_infantile" / "pseudo_brain.nii.gz"
FIGURES: dict[str, Any] = {}  # printed at the end of the module (-s) and written next to the test outputs
NEAR_TIE = 2.5e-4  # twice the fixed-point parcel sums' largest error under the official tiling (8 windows / 64,000)


def decided(probs: np.ndarray) -> np.ndarray:
    """Voxels whose top-two probabilities (``[C, ...]``) are more than ``NEAR_TIE`` apart."""
    top = np.sort(probs, axis=0)[-2:]
    return (top[1] - top[0]) > NEAR_TIE


def randomise_norms(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm/InstanceNorm statistics and affine parameters, so that no layer is the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._NormBase):
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=gen))
                    module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
                if module.track_running_stats:
                    module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                    module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def modules() -> dict[str, Any]:
    pytest.importorskip("SimpleITK", reason="the published scripts import SimpleITK (pip install -e '.[parity]')")
    pytest.importorskip("skimage", reason="the published scripts import scikit-image (pip install -e '.[parity]')")
    return {
        "brainparc": load_script(BRAINPARC_SCRIPT, "published_brainparc"),
        "autostrip": load_script(AUTOSTRIP_SCRIPT, "published_autostrip"),
    }


@pytest.fixture(scope="module", params=["random", "confident"])
def brainparc_pair(modules: dict[str, Any], request: pytest.FixtureRequest) -> tuple[torch.nn.Module, ...]:
    """Identical official-size networks; ``confident`` scales the parcel output layers ×200 (peaked softmax)."""
    from brainparc.models import build

    torch.manual_seed(15)
    ours = randomise_norms(build("brainparc-official"), seed=15)
    if request.param == "confident":
        with torch.no_grad():
            for branch in (ours.Parc.out_tr_s, ours.Parc.out_tr_b):
                branch.conv2.weight.mul_(200.0)
                branch.conv2.bias.mul_(200.0)
    theirs = published_network(modules["brainparc"], "brainparc", ours.state_dict())
    return ours, theirs, request.param


def _assert_labels(figures: dict[str, Any], confidence: str, all_key: str, decided_key: str) -> None:
    """Labels equal off near-ties; on all voxels too for a confident (trained-like) network."""
    assert figures[decided_key] >= 0.999
    if confidence == "confident":
        assert figures[all_key] >= 0.999
    else:
        assert figures["model_grid_decided_fraction"] >= 0.1


def _crop(img: nib.Nifti1Image, start: tuple[int, int, int], size: int) -> nib.Nifti1Image:
    sl = tuple(slice(s, s + size) for s in start)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32)[sl], img.slicer[sl].affine)


def _run_published_brainparc(module: Any, model: torch.nn.Module, src: Path, work: Path) -> dict[str, np.ndarray]:
    """The published get_pred end to end (temporary files in ``work``, as it writes them next to its input)."""
    seen = capture_get_pred(module)
    args = brainparc_args()
    brain = work / "brain.nii.gz"
    brain.write_bytes(src.read_bytes())
    module.get_pred(
        args, model, str(brain), str(work / "brain_edge.nii.gz"), str(work / "t.nii.gz"), str(work / "d.nii.gz")
    )
    tissue_sums, parc_sums = seen[-1]
    weights = brainparc_weight_sum(module, tissue_sums.shape[1:], args)
    return {
        "tissue_probs": tissue_sums / weights,
        "parc_probs": parc_sums / weights,
        "parc_sums": parc_sums,
        "tissue": np.asarray(nib.load(work / "t.nii.gz").dataobj).astype(np.int16),
        "parc": np.asarray(nib.load(work / "d.nii.gz").dataobj).astype(np.int16),
    }


def _run_ours(model: torch.nn.Module, img: nib.Nifti1Image, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Our pipeline with an official card (so ``auto`` picks the reference recipe); keeps the model-grid sums."""
    from brainparc.models import PRESETS
    from brainparc.pipeline import LoadedModels, ParcellateOptions, parcellate_image

    sw = importlib.import_module("brainparc.inference.sliding_window")  # the module (the package exports a function)
    sums: dict[Any, np.ndarray] = {}
    original = sw._finalise_resampled

    def keep(acc, wsum, index, reduce, resample, **kwargs):
        dense, w = sw._dense_planes(acc, wsum, index, 0, wsum.shape[0])
        sums[acc.shape[0]] = (dense / w.clamp_min(1e-30)).numpy()
        sums["region"] = np.ones(wsum.shape, bool) if index is None else (index >= 0).numpy()
        return original(acc, wsum, index, reduce, resample, **kwargs)

    monkeypatch.setattr(sw, "_finalise_resampled", keep)
    card = dict(PRESETS["brainparc-official"].card, source="official", sha256="0" * 64)
    opts = ParcellateOptions(skull_strip="skip", device="cpu")
    out = parcellate_image(img, LoadedModels(model, card), opts)
    return {
        "tissue_probs": sums[4],
        "parc_probs": sums[107],
        "tissue": np.asarray(out.tissue.dataobj),
        "parc": np.asarray(out.parc.dataobj),
        "provenance": out.provenance,
        "region": sums["region"],
    }


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def _native_region(region: np.ndarray, native_shape: tuple[int, ...], model_per_native: list[float]) -> np.ndarray:
    """Input-grid voxels whose whole trilinear stencil on the model grid lies in ``region`` (origin-anchored grids)."""
    from scipy import ndimage

    coords = np.meshgrid(
        *[np.arange(n) * f for n, f in zip(native_shape, model_per_native, strict=True)], indexing="ij"
    )
    return ndimage.map_coordinates(region.astype(np.float32), coords, order=1, mode="nearest") > 1 - 1e-6


def _compare(name: str, ours: dict[str, Any], ref: dict[str, Any], native_region: np.ndarray) -> dict[str, Any]:
    """Probabilities inside our sums' region (model grid); labels inside and outside its input-grid footprint.

    Outside the region (voxels more than 12 model voxels from the brain) ours are background by design (recipe
    ``region_margin``); the published labels there come from the network on zero background and are only reported.
    """
    region = ours["region"]
    sure = region & decided(ref["parc_probs"])
    outside = ~native_region
    figures = {
        "windows": ours["provenance"]["windows"],
        "region_fraction_model_grid": float(region.mean()),
        "max_abs_diff_tissue_prob": float(np.abs(ours["tissue_probs"] - ref["tissue_probs"])[:, region].max()),
        "max_abs_diff_parc_prob": float(np.abs(ours["parc_probs"] - ref["parc_probs"])[:, region].max()),
        "model_grid_parc_argmax_agreement": _agreement(
            ours["parc_probs"].argmax(0)[region], ref["parc_probs"].argmax(0)[region]
        ),
        "model_grid_decided_fraction": float(sure.sum() / region.sum()),
        "model_grid_parc_argmax_agreement_decided": _agreement(
            ours["parc_probs"].argmax(0)[sure], ref["parc_probs"].argmax(0)[sure]
        ),
        "tissue_agreement": _agreement(ours["tissue"][native_region], ref["tissue"][native_region]),
        "parc_agreement": _agreement(ours["parc"][native_region], ref["parc"][native_region]),
        "parcels_present": int(np.unique(ref["parc"][native_region]).size),
        "outside_region_voxels": int(outside.sum()),
        "outside_region_published_nonbackground": float((ref["parc"][outside] > 0).mean()) if outside.any() else 0.0,
        "outside_region_ours_nonbackground": float((ours["parc"][outside] > 0).mean()) if outside.any() else 0.0,
    }
    FIGURES[name] = figures
    return figures


def test_brainparc_native_grid_matches_published(brainparc_pair, modules, tmp_path, monkeypatch):
    """0.8 mm input (no resampling): z-score, float32 edge, tiling, Hann sums, argmax, sequential refinement."""
    ours_net, theirs_net, confidence = brainparc_pair
    sub = nib.load(SUB005)
    crop = _crop(sub, (56, 80, 100), 96)  # a 96³ window of sub005's brain, 21 % background (the top of the head)
    img = nib.Nifti1Image(np.asarray(crop.dataobj), np.diag([-0.8, 0.8, 0.8, 1.0]))  # relabelled as 0.8 mm, LAS
    nib.save(img, tmp_path / "in.nii.gz")
    ref = _run_published_brainparc(modules["brainparc"], theirs_net, tmp_path / "in.nii.gz", tmp_path)
    ours = _run_ours(ours_net, img, monkeypatch)
    assert ours["provenance"]["inference_recipe"]["name"] == "reference"
    figures = _compare(f"brainparc_0.8mm_{confidence}", ours, ref, ours["region"])
    sure = ours["region"] & decided(ref["parc_probs"])  # the model grid is the input grid here
    figures["parc_agreement_decided"] = _agreement(ours["parc"][sure], ref["parc"][sure])
    assert figures["windows"] == 1
    assert figures["max_abs_diff_tissue_prob"] < 1e-3 and figures["max_abs_diff_parc_prob"] < 1e-3
    assert figures["tissue_agreement"] >= 0.999
    _assert_labels(figures, confidence, "parc_agreement", "parc_agreement_decided")


def test_brainparc_resampled_grid_matches_published(brainparc_pair, modules, tmp_path, monkeypatch):
    """1 mm oblique input: SimpleITK-style 0.8 mm grid, trilinear sums back; spec §7 item 23 accounted for."""
    import torch.nn.functional as F

    ours_net, theirs_net, confidence = brainparc_pair
    module = modules["brainparc"]
    img = _crop(nib.load(SUB005), (60, 90, 110), 77)  # 77 voxels at 1 mm -> 96 at 0.8 mm: one window
    nib.save(img, tmp_path / "in.nii.gz")
    ref = _run_published_brainparc(module, theirs_net, tmp_path / "in.nii.gz", tmp_path)
    ours = _run_ours(ours_net, img, monkeypatch)
    zooms = img.header.get_zooms()[:3]
    native = _native_region(ours["region"], img.shape, [float(z) / 0.8 for z in zooms])
    figures = _compare(f"brainparc_1mm_{confidence}", ours, ref, native)
    # (b) the published model-grid sums resampled in physical space (origin kept: model index = native index × 1.25),
    # then the published argmax and _dk_refine
    n, m = img.shape, ref["parc_sums"].shape[1:]
    axes = [
        torch.arange(k, dtype=torch.float64) * float(z) / 0.8 / (mk - 1) * 2 - 1
        for k, mk, z in zip(n, m, zooms, strict=True)
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None].float()
    sums = torch.from_numpy(ref["parc_sums"]).float()[None]
    physical = F.grid_sample(sums, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    fixed = physical.argmax(0).numpy().astype(np.float32)
    weights = torch.from_numpy(ref["parc_sums"].sum(0)).float()[None, None]  # Σ_c p·W = W
    w_physical = F.grid_sample(weights, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    sure = native & decided((physical / w_physical.clamp_min(1e-30)).numpy())
    path = tmp_path / "fixed.nii.gz"
    geometry = module._ants_img_info(str(tmp_path / "in.nii.gz"))[:3]
    module.ants.image_write(module.ants.from_numpy(fixed, *geometry), str(path))
    try:  # the published script calls it inside a bare try/except (spec §3.5 step 10)
        module._dk_refine(str(path), str(path))
        raised = False
    except IndexError:  # it raises when one of its 28 labels is absent (random weights on a crop): a published bug
        raised = True  # that leaves the whole map unrefined; ours refines the labels present (docs/recipes.md)
    fixed_labels = np.asarray(nib.load(path).dataobj).astype(np.int16)
    figures["published_refine_raised"] = raised
    figures["parc_agreement_item23_fixed_unrefined"] = _agreement(ours["parc"][native], fixed_labels[native])
    if raised:  # compare like with like: the harness's labels refined the way ours are
        from brainparc.core.postproc import refine_parcels

        fixed_labels = refine_parcels(fixed_labels, sequential=True)
    figures["parc_agreement_item23_fixed"] = _agreement(ours["parc"][native], fixed_labels[native])
    figures["parc_agreement_item23_fixed_decided"] = _agreement(ours["parc"][sure], fixed_labels[sure])
    assert figures["max_abs_diff_tissue_prob"] < 1e-3 and figures["max_abs_diff_parc_prob"] < 1e-3
    _assert_labels(figures, confidence, "model_grid_parc_argmax_agreement", "model_grid_parc_argmax_agreement_decided")
    _assert_labels(figures, confidence, "parc_agreement_item23_fixed", "parc_agreement_item23_fixed_decided")


def test_autostrip_matches_published(modules, tmp_path):
    """AutoStrip on the native grid: min-max, stride-80 tiling, plain average, argmax, largest component."""
    from brainparc.core.skullstrip import largest_component
    from brainparc.inference import predict_brain_mask
    from brainparc.inference.recipes import RECIPES
    from brainparc.models import PRESETS, build

    module = modules["autostrip"]
    torch.manual_seed(16)
    ours_net = randomise_norms(build("autostrip-official"), seed=16)
    theirs_net = published_network(module, "autostrip", ours_net.state_dict())
    img = _crop(nib.load(PSEUDO), (40, 86, 96), 128)  # 128³ of an infant pseudo-brain at 0.8 mm: one window
    nib.save(img, tmp_path / "pseudo.nii.gz")
    seen = capture_get_pred(module)
    with torch.no_grad():  # the published loop runs without it (an autograd graph per window); values unchanged
        mask_ref = module.get_pred(autostrip_args(), theirs_net, str(tmp_path / "pseudo.nii.gz")).numpy() > 0
    prob_ref = seen[-1][1].numpy()
    recipe = RECIPES["reference"]
    card = dict(PRESETS["autostrip-official"].card, source="official")
    prob = predict_brain_mask(
        ours_net, np.asarray(img.dataobj), card, device="cpu", amp=False, official_geometry=recipe.strip_official_tiling
    )
    assert recipe.strip_cleanup == "largest-component"
    mask = largest_component(prob > 0.5)
    FIGURES["autostrip_0.8mm"] = {
        "max_abs_diff_brain_prob": float(np.abs(prob - prob_ref).max()),
        "mask_agreement": _agreement(mask, mask_ref),
        "mask_voxels": int(mask_ref.sum()),
    }
    assert FIGURES["autostrip_0.8mm"]["max_abs_diff_brain_prob"] < 1e-3
    assert FIGURES["autostrip_0.8mm"]["mask_agreement"] >= 0.999


def teardown_module() -> None:
    if FIGURES:
        print("\nparity figures:", json.dumps(FIGURES, indent=1))
