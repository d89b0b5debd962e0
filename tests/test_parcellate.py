"""End-to-end ``brainparc parcellate`` on a small phantom with tiny random-weight models, and its failure modes."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainparc.cli.main import EXIT_BAD_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main


def _phantom(shape=(64, 72, 60), affine=None) -> nib.Nifti1Image:
    """A skull-stripped-looking ellipsoid 'brain' (WM core, GM shell) on a zero background, RAS, 1 mm."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.8, 0.8, 0.75])[:, None, None, None]) ** 2).sum(0))
    rng = np.random.default_rng(0)
    data = np.where(r < 0.7, 110.0, np.where(r < 1.0, 70.0, 0.0)) + rng.normal(0, 2, shape) * (r < 1.0)
    return nib.Nifti1Image(data.astype(np.float32), np.eye(4) if affine is None else affine)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> list[str]:
    from brainparc.models import build, save

    folder = tmp_path_factory.mktemp("models")
    torch_seed = __import__("torch").manual_seed
    torch_seed(0)
    parc, strip = folder / "parc.safetensors", folder / "strip.safetensors"
    save(build("brainparc-tiny"), parc, preset="brainparc-tiny")
    save(build("autostrip-tiny"), strip, preset="autostrip-tiny")
    return [str(parc), str(strip)]


def _args(models: list[str]) -> list[str]:
    return [x for m in models for x in ("--model", m)] + ["--device", "cpu", "--nthreads", "1"]


def test_parcellate_writes_all_outputs_on_input_grid(tmp_path, tiny_models):
    src = tmp_path / "sub-01_T1w.nii.gz"
    # oblique, LPS-ish storage: outputs must still come back on exactly this grid
    c, s = np.cos(0.2), np.sin(0.2)
    affine = np.array([[-1.0, 0, 0, 30], [0, c, -s, -40], [0, s, c, -20], [0, 0, 0, 1]])
    img = _phantom(affine=affine)
    nib.save(img, src)
    out = tmp_path / "out"
    code = main(["parcellate", str(src), "-o", str(out), "--skull-strip", "skip", *_args(tiny_models)])
    assert code == EXIT_OK
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "brain_mask.nii.gz",
            "brain.nii.gz",
            "tissue_dseg.nii.gz",
            "tissue_probseg.nii.gz",
            "aparcaseg_dseg.nii.gz",
            "brainparc_dseg.nii.gz",
            "volumes.tsv",
            "provenance.json",
        ]
    )
    for name in names:
        if name.endswith(".nii.gz"):
            res = nib.load(out / name)
            assert res.shape[:3] == img.shape, name
            np.testing.assert_allclose(res.affine, img.affine, atol=1e-5, err_msg=name)
    mask = np.asarray(nib.load(out / "brain_mask.nii.gz").dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask > 0, np.asarray(img.dataobj) != 0)
    fs = np.asarray(nib.load(out / "aparcaseg_dseg.nii.gz").dataobj)
    idx = np.asarray(nib.load(out / "brainparc_dseg.nii.gz").dataobj)
    assert fs.dtype == np.int16 and idx.dtype == np.int16
    from brainparc.labels import dk_struct

    np.testing.assert_array_equal(fs, dk_struct().to_freesurfer(idx))
    assert not np.any(idx[mask == 0])  # labels stay inside the brain mask
    tsv = (out / "volumes.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["index", "name", "abbreviation", "freesurfer_id", "voxels", "volume_mm3"]
    assert len(tsv) == 1 + 106 + 5
    icv = next(line for line in tsv if line.split("\t")[1].startswith("Total intracranial"))
    assert float(icv.split("\t")[-1]) == pytest.approx(mask.sum() * 1.0, rel=1e-4)  # 1 mm voxels
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["device"] == "cpu" and prov["skull_strip"]["method"] == "skip"
    assert len(prov["models"]["parcellation"]["sha256"]) == 64
    assert {"conform", "skull_strip", "sobel_edges", "parcellation", "total"} <= set(prov["timings_s"])
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no staging leftovers


def test_user_brain_mask_overrides(tmp_path, tiny_models):
    src = tmp_path / "t1.nii.gz"
    img = _phantom()
    nib.save(img, src)
    user = np.zeros(img.shape, np.uint8)
    user[20:40, 20:50, 20:40] = 1
    nib.save(nib.Nifti1Image(user, img.affine), tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    args = ["parcellate", str(src), "-o", str(out), "--brain-mask", str(tmp_path / "mask.nii.gz")]
    assert main(args + _args(tiny_models)) == EXIT_OK
    np.testing.assert_array_equal(np.asarray(nib.load(out / "brain_mask.nii.gz").dataobj), user)


def _write(tmp_path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    return path


@pytest.mark.parametrize(
    "case",
    ["missing", "truncated", "not_nifti", "4d", "zeros", "nan", "thick", "small"],
)
def test_bad_input_exits_3_with_one_line(tmp_path, tiny_models, capsys, case):
    good = np.asarray(_phantom().dataobj)
    if case == "missing":
        path = tmp_path / "nope.nii.gz"
    elif case == "truncated":
        full = _write(tmp_path, good)
        path = tmp_path / "trunc.nii.gz"
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    elif case == "not_nifti":
        path = tmp_path / "x.nii.gz"
        path.write_text("hello")
    elif case == "4d":
        path = _write(tmp_path, np.stack([good, good], axis=-1))
    elif case == "zeros":
        path = _write(tmp_path, np.zeros_like(good))
    elif case == "nan":
        bad = good.copy()
        bad[3, 3, 3] = np.nan
        path = _write(tmp_path, bad)
    elif case == "thick":
        path = _write(tmp_path, good, zooms=(3.5, 3.5, 3.5))
    else:
        path = _write(tmp_path, good[:, :20, :])
    out = tmp_path / "out"
    code = main(["parcellate", str(path), "-o", str(out), *_args(tiny_models)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT, err
    assert len(err) == 1 and err[0].startswith("brainparc: error: bad input:"), err
    assert not out.exists() or not any(out.iterdir())


def test_four_d_single_volume_is_accepted(tmp_path, tiny_models):
    path = _write(tmp_path, np.asarray(_phantom().dataobj)[..., None])
    assert main(["parcellate", str(path), "-o", str(tmp_path / "o"), "--skull-strip", "skip", *_args(tiny_models)]) == 0


def test_missing_default_model_says_what_to_do(tmp_path, capsys, no_bundled_weights):
    path = _write(tmp_path, np.asarray(_phantom().dataobj))
    code = main(["parcellate", str(path), "-o", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == EXIT_MODEL
    assert "--model" in err and err.count("\n") == 1


def test_malicious_checkpoint_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "BrainParc.pth.gz"
    evil.write_bytes(gzip.compress(pickle.dumps({"Boundary.x": Evil()})))
    path = _write(tmp_path, np.asarray(_phantom().dataobj))
    code = main(["parcellate", str(path), "-o", str(tmp_path / "o"), "--model", str(evil)])
    assert code == EXIT_MODEL and not marker.exists()
    assert "model error" in capsys.readouterr().err


def test_usage_errors():
    with pytest.raises(SystemExit) as exc:
        main(["parcellate", "x.nii.gz"])  # -o missing
    assert exc.value.code == EXIT_USAGE
    assert main([]) == EXIT_USAGE


def test_inference_settings_follow_the_card_unless_overridden():
    from brainparc.models import PRESETS
    from brainparc.pipeline import ParcellateOptions, inference_settings

    lite = dict(PRESETS["brainparc-lite"].card)
    assert inference_settings(lite, ParcellateOptions()) == (0.25, True)
    assert inference_settings(lite, ParcellateOptions(overlap=0.5, amp=False)) == (0.5, False)
    official = dict(PRESETS["brainparc-official"].card)
    assert inference_settings(official, ParcellateOptions()) == (0.5, None)  # autocast on CUDA only
    assert inference_settings(official, ParcellateOptions(), cuda_amp=False) == (0.5, False)  # reference: fp32
    assert inference_settings(official, ParcellateOptions(amp=True), cuda_amp=False) == (0.5, True)  # unless asked


def test_reference_recipe_end_to_end(tmp_path, tiny_models):
    """--recipe reference: no N4, whole field of view, origin-anchored model grid, sums resampled back, no masking;
    recorded in provenance. A 1.25 mm input makes the model grid (tiny card: 1 mm) differ from the input grid."""
    src = tmp_path / "t1.nii.gz"
    img = _phantom(shape=(52, 58, 48), affine=np.diag([1.25, 1.25, 1.25, 1.0]))
    nib.save(img, src)
    out = tmp_path / "out"
    code = main(["parcellate", str(src), "-o", str(out), "--skull-strip", "skip", "--recipe", "reference",
                 *_args(tiny_models[:1])])  # fmt: skip
    assert code == EXIT_OK
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inference_recipe"]["name"] == "reference" and prov["bias_correction"] == "none (recipe)"
    assert prov["model_grid"]["shape"] == [65, 72, 60]  # round(n × 1.25), whole field of view
    assert "bias_correction" not in prov["timings_s"] and "conform_brain" in prov["timings_s"]
    parc = nib.load(out / "brainparc_dseg.nii.gz")
    assert parc.shape == img.shape and np.allclose(parc.affine, img.affine)
    brain = np.asarray(nib.load(out / "brain.nii.gz").dataobj)
    np.testing.assert_allclose(brain, np.asarray(img.dataobj), rtol=1e-6)  # no N4, exact reorientation only


@pytest.mark.parametrize("inference", [None, {"overlap": 0.25, "cpu_amp": True}])
def test_skull_strip_network_uses_its_own_card_settings(tmp_path, tiny_models, monkeypatch, inference):
    """AutoStrip runs with its card's overlap and CPU autocast (not the parcellation card's); provenance says so."""
    from brainparc import models
    from brainparc.core import skullstrip

    strip_model, card = models.load(tiny_models[1])
    strip = tmp_path / "strip.safetensors"
    extra = {} if inference is None else {"inference": inference}
    models.save(strip_model, strip, preset=card["preset"], **extra)
    box = np.zeros((64, 72, 60), np.uint8)
    box[4:60, 4:68, 4:56] = 1
    fit = skullstrip.TemplateFit(box > 0, np.zeros((3, *box.shape), np.float32), "head", 0.0)
    monkeypatch.setattr(skullstrip, "register_template", lambda img, **kw: fit)  # no registration in a unit test
    src = tmp_path / "t1.nii.gz"
    nib.save(_phantom(), src)
    code = main(["parcellate", str(src), "-o", str(tmp_path / "o"), "--skull-strip", "force",
                 *_args([tiny_models[0], str(strip)])])  # fmt: skip
    assert code == EXIT_OK
    got = json.loads((tmp_path / "o" / "provenance.json").read_text())["skull_strip"]
    want = (0.5, False) if inference is None else (0.25, True)
    assert got["method"] == "pseudo-brain+refine" and (got["overlap"], got["autocast"]) == want


def test_whole_head_brain_mask_keeps_the_csf_shell_as_csf(tmp_path, tiny_models, monkeypatch):
    """Whole head, template mask without a network: brain_mask is intracranial (brain + its CSF layer, not skull or
    scalp), the layer is CSF in aparc+aseg (24) and in the tissue map, and the intracranial volume counts it."""
    from brainparc.core import skullstrip

    shape = (64, 72, 60)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.9, 0.9, 0.85])[:, None, None, None]) ** 2).sum(0))
    data = np.select([r < 0.45, r < 0.6, r < 0.7, r < 0.8, r < 0.9], [110.0, 75.0, 30.0, 5.0, 120.0], 0.0)
    src = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), src)
    brain = r < 0.6  # symmetric: the same on the conformed (LAS) grid
    fit = skullstrip.TemplateFit(brain, np.zeros((3, *shape), np.float32), "head", 0.0)
    monkeypatch.setattr(skullstrip, "register_template", lambda img, **kw: fit)  # no registration in a unit test
    out = tmp_path / "out"
    assert main(["parcellate", str(src), "-o", str(out), "--skull-strip", "force", *_args(tiny_models[:1])]) == 0
    mask = np.asarray(nib.load(out / "brain_mask.nii.gz").dataobj) > 0
    fs = np.asarray(nib.load(out / "aparcaseg_dseg.nii.gz").dataobj)
    tissue = np.asarray(nib.load(out / "tissue_dseg.nii.gz").dataobj)
    layer = (r > 0.62) & (r < 0.68)  # inside the CSF layer, away from its edges
    assert mask[r < 0.6].all() and mask[layer].all() and not mask[r > 0.72].any()
    assert (fs[layer] == 24).all() and (tissue[layer] == 1).all()
    assert (fs[r < 0.55] > 0).all()  # the brain keeps the network's labels
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["skull_strip"]["method"] == "template"
    tsv = (out / "volumes.tsv").read_text().splitlines()
    icv = next(line for line in tsv if line.split("\t")[1].startswith("Total intracranial"))
    assert float(icv.split("\t")[-1]) == pytest.approx(mask.sum(), rel=1e-4)


def test_outputs_are_readable_by_others(tmp_path):
    """mkstemp creates 0600 files; published outputs must get the usual 0666-minus-umask permissions."""
    import os

    from brainparc.outputs import save_nifti_atomic, write_atomic

    old = os.umask(0o022)
    try:
        a = write_atomic(tmp_path / "a.tsv", "x\n")
        b = save_nifti_atomic(_phantom(shape=(4, 4, 4)), tmp_path / "b.nii.gz")
    finally:
        os.umask(old)
    assert (a.stat().st_mode & 0o777) == 0o644 and (b.stat().st_mode & 0o777) == 0o644
