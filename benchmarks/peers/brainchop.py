"""brainchop's MeshNet models (tensorflow.js layers format) run in torch, for side-by-side benchmarks only.

The weights are read in place from ``../shared/data/anchors/brainchop`` (MIT, see its ``LICENSE.brainchop.txt`` and
README); nothing here copies or bundles them, and no brainparc code imports this module.  The recipe follows the
anchors README (checked against brainchop's source):

* conform like niivue's ``computeConform`` (FastSurfer's ``conform``): 256³, 1 mm, LIA, trilinear, the input's centre
  at voxel 128, intensities scaled to uint8 from the histogram (top 0.1 % clipped); the network sees the plain
  ``[i, j, k]`` array of that LIA volume;
* ``parcellate`` ("Aparc+Aseg 104", ``model21_104class``): ``model5_gw_ae`` on the whole conformed volume, crop to the
  bounding box of its tissue > 0 (cropPadding 0), min-max normalisation over the whole volume, model21 with 'same'
  padding, argmax, labels padded back, the largest 26-connected component kept, classes mapped to FreeSurfer ids and
  resampled (nearest) onto the input grid;
* ``mask`` (``mindgrab``, ``model11_gw_ae``): the whole conformed volume (quantile normalisation: mindgrab 2–98 %
  clipped as brainchop-cli does, model11 5–95 % as brainchop's "Brain Mask (High Acc)"), argmax > 0, the largest
  26-connected component.  mindgrab's ``*_gn`` layers are a per-channel normalisation over space (eps 1e-5, no
  affine), its gelu the exact erf form.

    python benchmarks/peers/brainchop.py parcellate T1.nii.gz -o out/      # aparcaseg_dseg.nii.gz, brain_mask, ...
    python benchmarks/peers/brainchop.py mask T1.nii.gz -o out/ --model mindgrab
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ANCHORS = (
    Path(os.environ.get("BRAINPARC_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    / "anchors"
    / "brainchop"
)
PARC_MODEL, PRE_MODEL, MASK_MODELS = "model21_104class", "model5_gw_ae", ("mindgrab", "model11_gw_ae")
DK = (  # FreeSurfer DK order: ctx-lh-<name> is 1000 + position + 1
    "bankssts caudalanteriorcingulate caudalmiddlefrontal corpuscallosum cuneus entorhinal fusiform "
    "inferiorparietal inferiortemporal isthmuscingulate lateraloccipital lateralorbitofrontal lingual "
    "medialorbitofrontal middletemporal parahippocampal paracentral parsopercularis parsorbitalis "
    "parstriangularis pericalcarine postcentral posteriorcingulate precentral precuneus "
    "rostralanteriorcingulate rostralmiddlefrontal superiorfrontal superiorparietal superiortemporal "
    "supramarginal frontalpole temporalpole transversetemporal insula"
).split()
ASEG = {  # FreeSurferColorLUT ids of brainchop's non-cortical class names
    "BG": 0, "Left-Thalamus-Proper*": 10, "Right-Thalamus-Proper*": 49, "Left-Caudate": 11, "Right-Caudate": 50,
    "Left-Putamen": 12, "Right-Putamen": 51, "Left-Pallidum": 13, "Right-Pallidum": 52, "Left-Hippocampus": 17,
    "Right-Hippocampus": 53, "Left-Amygdala": 18, "Right-Amygdala": 54, "Left-Accumbens-area": 26,
    "Right-Accumbens-area": 58, "Left-VentralDC": 28, "Right-VentralDC": 60, "Left-Cerebral-White-Matter": 2,
    "Right-Cerebral-White-Matter": 41, "Left-Lateral-Ventricle": 4, "Left-Inf-Lat-Vent": 5,
    "Right-Lateral-Ventricle": 43, "Right-Inf-Lat-Vent": 44, "3rd-Ventricle": 14, "4th-Ventricle": 15, "CSF": 24,
    "Brain-Stem": 16, "Left-Cerebellum-White-Matter": 7, "Right-Cerebellum-White-Matter": 46,
    "Left-Cerebellum-Cortex": 8, "Right-Cerebellum-Cortex": 47, "CC_Posterior": 251, "CC_Mid_Posterior": 252,
    "CC_Central": 253, "CC_Mid_Anterior": 254, "CC_Anterior": 255,
}  # fmt: skip
LIA = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: i → left, j → inferior, k → anterior


def available(anchors: Path = ANCHORS) -> bool:
    """Whether the brainchop models this module runs are all present."""
    return all((anchors / m / "model.json").is_file() for m in (PARC_MODEL, PRE_MODEL, *MASK_MODELS))


def freesurfer_ids(names: list[str]) -> np.ndarray:
    """FreeSurfer id of each brainchop class name (``ctx-lh-<dk>`` → 1000 + DK index, aseg names from the LUT)."""
    ids = []
    for name in names:
        if name.startswith(("ctx-lh-", "ctx-rh-")):
            ids.append((1000 if name[4] == "l" else 2000) + DK.index(name[7:]) + 1)
        else:
            ids.append(ASEG[name])
    return np.asarray(ids, dtype=np.int16)


def class_names(model: str, anchors: Path = ANCHORS) -> list[str]:
    """Class names of a model (``colormap.json`` → ``labels``)."""
    return json.loads((anchors / model / "colormap.json").read_text())["labels"]


# ----------------------------------------------------------------------------------------------------------- network
class MeshNet(torch.nn.Module):
    """A tfjs layers-format MeshNet: Conv3D ('same', dilated) [+ per-channel spatial norm] + activation, 1×1×1 head."""

    def __init__(self, layers: list[dict]):
        super().__init__()
        self.specs = layers
        self.convs = torch.nn.ModuleList()
        for spec in layers:
            conv = torch.nn.Conv3d(
                spec["in"],
                spec["out"],
                spec["kernel"],
                dilation=spec["dilation"],
                padding=spec["dilation"] * (spec["kernel"] - 1) // 2,
                bias=spec["bias"],
            )
            self.convs.append(conv)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything but the final 1×1×1 classifier."""
        for spec, conv in zip(self.specs[:-1], self.convs[:-1], strict=True):
            x = conv(x)
            if spec["norm"]:
                x = F.instance_norm(x, eps=1e-5)
            x = _activate(x, spec["activation"])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (small inputs only: :meth:`segment` never holds the whole logits)."""
        return self.convs[-1](self.features(x))

    @torch.inference_mode()
    def segment(self, volume: np.ndarray, slab: int = 16) -> np.ndarray:
        """Argmax labels (uint8) of a 3-D volume; the classifier runs in slabs so that the logits never exist whole."""
        feats = self.features(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None])
        head = self.convs[-1]
        out = np.empty(volume.shape, dtype=np.uint8)
        for s in range(0, volume.shape[0], slab):
            out[s : s + slab] = head(feats[:, :, s : s + slab]).argmax(1)[0].numpy().astype(np.uint8)
        return out


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """Keras activation by name (gelu: the exact erf form)."""
    if name == "relu":
        return F.relu(x, inplace=True)
    if name == "gelu":
        return F.gelu(x, approximate="none")
    if name == "elu":
        return F.elu(x, inplace=True)
    if name == "linear":
        return x
    raise ValueError(f"unsupported activation {name!r}")


def load_tfjs(folder: Path) -> MeshNet:
    """Load ``model.json`` + weightsManifest + little-endian float32 ``.bin`` shards into a :class:`MeshNet`.

    Keras kernels ``[kd, kh, kw, in, out]`` become torch ``[out, in, kd, kh, kw]``; a Conv3D followed by an Activation
    layer takes that activation; names ending in ``_gn`` add the per-channel normalisation over space.
    """
    spec = json.loads((folder / "model.json").read_text())
    tensors: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        raw = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w.get("dtype", "float32") != "float32":
                raise ValueError(f"{folder}: weight {w['name']} is {w['dtype']}, not float32")
            n = int(np.prod(w["shape"]))
            tensors[w["name"]] = np.frombuffer(raw, dtype="<f4", count=n, offset=offset).reshape(w["shape"])
            offset += 4 * n
        if offset != len(raw):
            raise ValueError(f"{folder}: manifest covers {offset} of {len(raw)} bytes")
    topology = spec["modelTopology"]
    config = topology.get("model_config", topology)["config"]
    layers = config["layers"] if isinstance(config, dict) else config
    convs: list[dict] = []
    in_ch = int(layers[0]["config"]["batch_input_shape"][-1])
    for layer in layers[1:]:
        c = layer["config"]
        if layer["class_name"] == "Conv3D":
            if c.get("padding") != "same" or any(s != 1 for s in c["strides"]) or len(set(c["kernel_size"])) != 1:
                raise ValueError(f"{folder}: unsupported Conv3D {c['name']}")
            convs.append({"name": c["name"], "in": in_ch, "out": c["filters"], "kernel": c["kernel_size"][0],
                          "dilation": c["dilation_rate"][0], "bias": c["use_bias"], "norm": c["name"].endswith("_gn"),
                          "activation": c.get("activation", "linear")})  # fmt: skip
            in_ch = c["filters"]
        elif layer["class_name"] == "Activation":
            convs[-1]["activation"] = c["activation"]
        else:
            raise ValueError(f"{folder}: unsupported layer {layer['class_name']}")
    net = MeshNet(convs).eval()
    used = 0
    for spec_, conv in zip(convs, net.convs, strict=True):
        kernel = tensors[f"{spec_['name']}/kernel"]
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
        used += 1
        if spec_["bias"]:
            conv.bias.data = torch.from_numpy(tensors[f"{spec_['name']}/bias"].copy())
            used += 1
    if used != len(tensors):
        raise ValueError(f"{folder}: {len(tensors) - used} weight tensors not used by the topology")
    return net


# ------------------------------------------------------------------------------------------------------ conform
def getscale(data: np.ndarray, f_high: float = 0.999) -> tuple[float, float]:
    """FastSurfer's ``getscale`` to [0, 255]: source minimum and scale from a 1000-bin histogram, the brightest
    ``1 - f_high`` of all voxels clipped."""
    src_min, src_max = float(data.min()), float(data.max())
    voxnum = data.size
    hist, _ = np.histogram(data, 1000)
    cs = np.concatenate(([0], np.cumsum(hist)))
    bin_size = (src_max - src_min) / 1000
    above = np.flatnonzero(cs >= voxnum - int((1.0 - f_high) * voxnum))
    robust_max = (above[0] - 2) * bin_size + src_min if len(above) else src_max
    return src_min, 1.0 if robust_max == src_min else 255.0 / (robust_max - src_min)


def conform(img: nib.spatialimages.SpatialImage, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """256³ 1 mm LIA uint8 volume (trilinear, input centre at voxel 128, FastSurfer scaling) and its affine
    (``size`` other than 256: for tests only)."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = data.reshape(data.shape[:3]) if data.ndim > 3 and np.prod(data.shape[3:]) == 1 else data
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {data.shape}")
    src_min, scale = getscale(data)
    affine = np.eye(4)
    affine[:3, :3] = LIA
    centre = img.affine @ np.r_[np.array(data.shape) / 2.0, 1.0]
    affine[:3, 3] = centre[:3] - LIA @ np.full(3, size / 2)
    vox2vox = np.linalg.inv(img.affine) @ affine
    mapped = ndimage.affine_transform(data, vox2vox[:3, :3], vox2vox[:3, 3], output_shape=(size,) * 3, order=1)
    return np.rint(np.clip(scale * (mapped - src_min), 0, 255)).astype(np.uint8), affine


def to_input_grid(labels: np.ndarray, affine: np.ndarray, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Nearest-neighbour labels of the conformed grid at every voxel of the input grid."""
    vox2vox = np.linalg.inv(affine) @ img.affine
    return ndimage.affine_transform(labels, vox2vox[:3, :3], vox2vox[:3, 3], output_shape=img.shape[:3], order=0)


# --------------------------------------------------------------------------------------------------- post-processing
def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1] (float32)."""
    x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return x - lo if hi == lo else (x - lo) / (hi - lo)


def quantile_norm(x: np.ndarray, qlow: float, qhigh: float, clip: bool) -> np.ndarray:
    """Quantile normalisation (float32), optionally clipped to [0, 1]."""
    x = x.astype(np.float32)
    lo, hi = np.quantile(x, [qlow, qhigh])
    y = (x - lo) / max(float(hi - lo), 1e-3)
    return np.clip(y, 0, 1) if clip else y


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...]:
    """Bounding box of a mask, grown by ``pad`` voxels (clipped to the volume)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + 1 + pad, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


# ------------------------------------------------------------------------------------------------------- runners
def parcellate(t1: Path, out: Path, anchors: Path = ANCHORS) -> dict:
    """Aparc+Aseg 104 on one T1w; writes ``aparcaseg_dseg.nii.gz`` (FreeSurfer ids, input grid), ``brain_mask.nii.gz``
    (labels > 0), ``conformed_T1w.nii.gz``/``conformed_dseg.nii.gz`` (the network's grid) and ``provenance.json``."""
    times: dict[str, float] = {}
    t0 = t = time.perf_counter()
    img = nib.load(str(t1))
    vol, affine = conform(img)
    times["conform"], t = time.perf_counter() - t, time.perf_counter()
    tissue = load_tfjs(anchors / PRE_MODEL).segment(minmax(vol))
    times["premodel"], t = time.perf_counter() - t, time.perf_counter()
    if not (tissue > 0).any():
        raise RuntimeError(f"{PRE_MODEL} found no brain tissue")
    box = bbox(tissue > 0, pad=0)  # model21's cropPadding
    labels = np.zeros(vol.shape, dtype=np.uint8)
    labels[box] = load_tfjs(anchors / PARC_MODEL).segment(minmax(vol)[box])
    times["parcellation"], t = time.perf_counter() - t, time.perf_counter()
    labels[~largest_component(labels > 0)] = 0
    fs = freesurfer_ids(class_names(PARC_MODEL, anchors))[labels]
    out.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, affine), str(out / "conformed_T1w.nii.gz"))
    nib.save(nib.Nifti1Image(fs.astype(np.int16), affine), str(out / "conformed_dseg.nii.gz"))
    native = to_input_grid(fs, affine, img).astype(np.int16)
    nib.save(nib.Nifti1Image(native, img.affine), str(out / "aparcaseg_dseg.nii.gz"))
    nib.save(nib.Nifti1Image((native > 0).astype(np.uint8), img.affine), str(out / "brain_mask.nii.gz"))
    times["post"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    return _provenance(out, PARC_MODEL, times, crop=[[s.start, s.stop] for s in box])


def mask(t1: Path, out: Path, model: str, anchors: Path = ANCHORS) -> dict:
    """A brainchop skull-strip model on one T1w; writes ``brain_mask.nii.gz`` (input grid) and ``provenance.json``."""
    if model not in MASK_MODELS:
        raise ValueError(f"unknown mask model {model!r} (one of {', '.join(MASK_MODELS)})")
    times: dict[str, float] = {}
    t0 = t = time.perf_counter()
    img = nib.load(str(t1))
    vol, affine = conform(img)
    times["conform"], t = time.perf_counter() - t, time.perf_counter()
    x = quantile_norm(vol, 0.02, 0.98, clip=True) if model == "mindgrab" else quantile_norm(vol, 0.05, 0.95, False)
    brain = load_tfjs(anchors / model).segment(x) > 0
    times["skullstrip"], t = time.perf_counter() - t, time.perf_counter()
    brain = largest_component(brain)
    out.mkdir(parents=True, exist_ok=True)
    native = to_input_grid(brain.astype(np.uint8), affine, img)
    nib.save(nib.Nifti1Image(native.astype(np.uint8), img.affine), str(out / "brain_mask.nii.gz"))
    times["post"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    return _provenance(out, model, times)


def _provenance(out: Path, model: str, times: dict[str, float], **extra: object) -> dict:
    """Write and return ``provenance.json`` (model, source, licence, timings)."""
    prov = {"model": f"brainchop {model}", "source": "neuroneural/brainchop@4c87885 (MIT), benchmark only",
            "threads": torch.get_num_threads(), "timings_s": times, **extra}  # fmt: skip
    (out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    return prov


def main(argv: list[str] | None = None) -> int:
    """Command line: ``parcellate IN -o OUT`` or ``mask IN -o OUT --model mindgrab|model11_gw_ae``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("parcellate", "mask"))
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--model", default="mindgrab", help="mask model (mindgrab or model11_gw_ae)")
    p.add_argument("--anchors", type=Path, default=ANCHORS, help="brainchop models folder")
    p.add_argument("--nthreads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args(argv)
    if a.nthreads:
        torch.set_num_threads(a.nthreads)
    if not available(a.anchors):
        print(f"brainchop models not found under {a.anchors}", file=sys.stderr)
        return 2
    prov = parcellate(a.input, a.out, a.anchors) if a.command == "parcellate" else mask(a.input, a.out, a.model,
                                                                                        a.anchors)  # fmt: skip
    print(json.dumps(prov["timings_s"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
