"""N4 runs once per T1w in the BIDS App, and the App's parcellation equals ``brainparc parcellate`` on the same image.

The workflow's ``bias_correct`` node writes ``desc-preproc_T1w`` and hands that image to the parcellation node,
which skips the pipeline's own N4. The Linear plugin runs every node in this process, so a counting wrapper around
:func:`brainparc.core.bias.n4` sees every call.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainparc.cli.main import EXIT_OK, main
from tests.bids.skeleton import make_bids

FILES = ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]


@pytest.fixture
def n4_calls(monkeypatch):
    import brainparc.core.bias as bias

    calls: list[tuple[int, ...]] = []
    real = bias.n4

    def counting_n4(img, *args, **kwargs):
        calls.append(tuple(img.shape))
        return real(img, *args, **kwargs)

    monkeypatch.setattr(bias, "n4", counting_n4)
    return calls


def test_n4_once_per_t1w_and_same_result_as_parcellate(tmp_path, tiny_model_paths, n4_calls):
    bids = make_bids(tmp_path / "bids", FILES)
    out = tmp_path / "out"
    common = ["--model", tiny_model_paths[0], "--skull-strip", "skip", "--device", "cpu"]
    args = [str(bids), str(out), "participant", *common, "--plugin", "Linear", "--omp-nthreads", "1"]
    assert main([*args, "--skip-bids-validation"]) == EXIT_OK
    assert len(n4_calls) == len(FILES), f"N4 ran {len(n4_calls)} times for {len(FILES)} T1w images"

    # the single-image command (N4 inside the pipeline) gives the same parcellation, mask and tissue classes
    n4_calls.clear()
    single = tmp_path / "single"
    assert main(["parcellate", str(bids / FILES[0]), "-o", str(single), *common, "--nthreads", "1"]) == EXIT_OK
    assert len(n4_calls) == 1
    anat = out / "sub-01" / "anat"
    pairs = {
        "aparcaseg_dseg.nii.gz": "sub-01_desc-aparcaseg_dseg.nii.gz",
        "brain_mask.nii.gz": "sub-01_desc-brain_mask.nii.gz",
        "tissue_dseg.nii.gz": "sub-01_desc-tissue_dseg.nii.gz",
    }
    for mine, app in pairs.items():
        a, b = np.asarray(nib.load(single / mine).dataobj), np.asarray(nib.load(anat / app).dataobj)
        np.testing.assert_array_equal(a, b, err_msg=app)
    # desc-preproc_T1w is the image the parcellation saw: N4-corrected, not the raw input
    raw = np.asarray(nib.load(bids / FILES[0]).dataobj, dtype=np.float32)
    pre = np.asarray(nib.load(anat / "sub-01_desc-preproc_T1w.nii.gz").dataobj, dtype=np.float32)
    assert pre.shape == raw.shape and not np.array_equal(pre, raw)
