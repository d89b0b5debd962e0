"""The brainchop peer runner and the side-by-side evaluation: tfjs loader against a direct Keras-layout reference,
conform geometry, class mapping, scoring helpers (fast; the real models only when ../shared/data is there)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import evaluate  # noqa: E402
from peers import brainchop  # noqa: E402


def _keras_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, dilation: int) -> np.ndarray:
    """Keras Conv3D, 'same' padding, channels last: ``x`` [D, H, W, C], ``kernel`` [kd, kh, kw, in, out]."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, [(pad, pad)] * 3 + [(0, 0)])
    out = np.zeros((*x.shape[:3], kernel.shape[-1]))
    for a in range(k):
        for b in range(k):
            for c in range(k):
                win = xp[a * dilation : a * dilation + x.shape[0], b * dilation : b * dilation + x.shape[1]]
                win = win[:, :, c * dilation : c * dilation + x.shape[2]]
                out += win @ kernel[a, b, c]
    return out + (0 if bias is None else bias)


def _write_tfjs(folder: Path, layers: list[tuple[str, int, int, bool, str]], rng: np.random.Generator) -> dict:
    """A tiny tfjs layers model: (name, filters, kernel, bias, activation) per Conv3D; returns its weights."""
    topo = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8, 8, 8, 1], "name": "input"}}]
    manifest, weights, blobs, in_ch = [], {}, [], 1
    for name, filters, k, bias, act in layers:
        topo.append({"class_name": "Conv3D", "config": {
            "name": name, "filters": filters, "kernel_size": [k] * 3, "dilation_rate": [2 if k == 3 else 1] * 3,
            "padding": "same", "strides": [1, 1, 1], "use_bias": bias, "activation": "linear"}})  # fmt: skip
        topo.append({"class_name": "Activation", "config": {"name": f"{name}_act", "activation": act}})
        weights[f"{name}/kernel"] = rng.standard_normal((k, k, k, in_ch, filters)).astype("<f4")
        if bias:
            weights[f"{name}/bias"] = rng.standard_normal(filters).astype("<f4")
        in_ch = filters
    for key, w in weights.items():
        manifest.append({"name": key, "shape": list(w.shape), "dtype": "float32"})
        blobs.append(w.tobytes())
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"".join(blobs))
    spec = {"format": "layers-model", "modelTopology": {"model_config": {"config": {"layers": topo}}},
            "weightsManifest": [{"paths": ["w.bin"], "weights": manifest}]}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(spec))
    return weights


def test_tfjs_loader_matches_keras_layout(tmp_path: Path) -> None:
    """Kernel [kd, kh, kw, in, out] → torch, dilation, relu, the 1×1×1 head: same logits as a direct Keras conv."""
    rng = np.random.default_rng(0)
    w = _write_tfjs(tmp_path / "m", [("c1", 3, 3, True, "relu"), ("out", 4, 1, True, "linear")], rng)
    net = brainchop.load_tfjs(tmp_path / "m")
    x = rng.standard_normal((8, 8, 8)).astype(np.float32)
    h = np.maximum(_keras_conv(x[..., None], w["c1/kernel"], w["c1/bias"], 2), 0)
    ref = _keras_conv(h, w["out/kernel"], w["out/bias"], 1)
    with torch.inference_mode():
        got = net(torch.from_numpy(x)[None, None])[0].numpy().transpose(1, 2, 3, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(net.segment(x, slab=3), ref.argmax(-1))


def test_gn_layers_normalise_per_channel_and_gelu_is_exact(tmp_path: Path) -> None:
    """mindgrab-style ``*_gn`` layers: per-channel normalisation over space (eps 1e-5), then erf gelu."""
    from scipy.special import erf

    rng = np.random.default_rng(1)
    w = _write_tfjs(tmp_path / "g", [("c_gn", 2, 3, False, "gelu"), ("out", 2, 1, True, "linear")], rng)
    net = brainchop.load_tfjs(tmp_path / "g")
    x = rng.standard_normal((8, 8, 8)).astype(np.float32)
    h = _keras_conv(x[..., None], w["c_gn/kernel"], None, 2)
    h = (h - h.mean((0, 1, 2))) / np.sqrt(h.var((0, 1, 2)) + 1e-5)
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    ref = _keras_conv(h, w["out/kernel"], w["out/bias"], 1)
    with torch.inference_mode():
        got = net(torch.from_numpy(x)[None, None])[0].numpy().transpose(1, 2, 3, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conform_is_lia_centred_and_keeps_left_left() -> None:
    """A RAS 2 mm image: 1 mm LIA (96³ here, 256³ in use), its centre at voxel size/2, a blob on the left stays at
    negative RAS x."""
    data = np.full((40, 40, 40), 10.0, dtype=np.float32)
    data[5:10, 18:22, 18:22] = 200.0  # low i of a RAS image: the subject's left
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40.0, -30.0, -20.0]
    img = nib.Nifti1Image(data, affine)
    vol, conf = brainchop.conform(img, size=96)
    assert vol.shape == (96, 96, 96) and vol.dtype == np.uint8
    assert nib.aff2axcodes(conf) == ("L", "I", "A") and np.allclose(nib.affines.voxel_sizes(conf), 1)
    np.testing.assert_allclose(conf @ [48, 48, 48, 1], affine @ [20, 20, 20, 1])
    blob = np.argwhere(vol > 0.8 * vol.max()).mean(0)
    x_ras = (conf @ np.r_[blob, 1])[0]
    assert x_ras < (affine @ [20, 20, 20, 1])[0] - 10
    back = brainchop.to_input_grid((vol > 0.8 * vol.max()).astype(np.uint8), conf, img)
    assert back[5:10, 18:22, 18:22].mean() > 0.5 and back[20:, :, :].sum() == 0


def test_largest_component_is_26_connected() -> None:
    """Diagonal neighbours join; the smaller island goes."""
    m = np.zeros((6, 6, 6), dtype=bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True
    m[5, 5, 5] = True
    kept = brainchop.largest_component(m)
    assert kept.sum() == 3 and not kept[5, 5, 5]


def test_freesurfer_ids_of_brainchop_names() -> None:
    """DK names by position (bankssts 1001 … insula 2035; no corpus callosum class), aseg names from the LUT."""
    ids = brainchop.freesurfer_ids(["BG", "ctx-lh-bankssts", "ctx-rh-insula", "ctx-lh-cuneus", "Left-Thalamus-Proper*"])
    assert ids.tolist() == [0, 1001, 2035, 1005, 10]
    if (brainchop.ANCHORS / brainchop.PARC_MODEL / "colormap.json").exists():
        all_ids = brainchop.freesurfer_ids(brainchop.class_names(brainchop.PARC_MODEL))
        assert len(all_ids) == 104 and len(set(all_ids.tolist())) == 104


@pytest.mark.skipif(not brainchop.available(), reason="brainchop models not in ../shared/data/anchors")
def test_shipped_models_load() -> None:
    """The four shipped models load with every weight tensor used and the README's parameter counts."""
    counts = {m: sum(p.numel() for p in brainchop.load_tfjs(brainchop.ANCHORS / m).parameters())
              for m in (brainchop.PARC_MODEL, *brainchop.MASK_MODELS)}  # fmt: skip
    assert counts == {"model21_104class": 86372, "mindgrab": 146237, "model11_gw_ae": 23290}


def test_evaluate_helpers() -> None:
    """Hemisphere check on FreeSurfer ids, which systems run where, and the per-metric tables."""
    fs = np.zeros((10, 4, 4), dtype=np.int32)
    fs[1:3] = 1024  # left precentral at low i of a RAS grid
    fs[7:9] = 2024
    assert not evaluate.hemispheres(fs, np.eye(4))["swap"]
    assert evaluate.hemispheres(fs[::-1], np.eye(4))["swap"]
    cases = evaluate.cases(Path("/nowhere"))
    assert not evaluate.runs_on("peer", cases["as001"]) and evaluate.runs_on("mindgrab", cases["as001"])
    assert not evaluate.runs_on("mindgrab", cases["mb13"]) and evaluate.runs_on("atlas", cases["as002"])
    results = {"default": {"mne": {"aseg": 0.5, "mask": 0.9, "wall_s": 60.0}},
               "peer": {"mne": {"aseg": 0.7, "wall_s": 90.0}, "mb13": {"error": "boom"}}}  # fmt: skip
    text = evaluate.summary_tables(results, ["a note"], 1)
    assert "| mne | 0.500 | 0.700 |" in text and "a note" in text and "failed" not in text.split("## aseg")[0]
    assert "## mask" in text and "| mne | 0.900 |  |" in text


def test_ribbon_agreement_separates_the_ribbon_from_the_parcel_borders() -> None:
    """A right ribbon with a shifted parcel border: ribbon Dice 1, parcel agreement the share left in place."""
    ref = np.zeros((10, 10, 1), dtype=np.int32)
    ref[2:8, 2:8] = 1024
    ref[2:8, 5:8] = 1028
    ours = ref.copy()
    ours[2:8, 5] = 1024  # the border moved by one column of six voxels
    got = evaluate.ribbon_agreement(ours, ref, [1024, 1028])
    assert got["ribbon"] == 1.0 and got["parcel_in_ribbon"] == 30 / 36
    ours[2:8, 2] = 2  # a column of the ribbon lost to white matter: the ribbon shrinks, the parcels inside stay
    got = evaluate.ribbon_agreement(ours, ref, [1024, 1028])
    assert got["ribbon"] == 2 * 30 / 66 and got["parcel_in_ribbon"] == 24 / 30
