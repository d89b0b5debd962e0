"""Build-only wiring tests: the participant workflow over a grid of options, flattened without running."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from brainparc.bids.layout import T1wInput
from brainparc.workflows.base import init_brainparc_wf

T1WS = [
    T1wInput(Path("/d/sub-01/anat/sub-01_T1w.nii.gz"), "01", {}, None),
    T1wInput(Path("/d/sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz"), "01", {"session": "2", "run": 1}, 0.5),
    T1wInput(Path("/d/sub-02/anat/sub-02_acq-fast_T1w.nii.gz"), "02", {"acquisition": "fast"}, 80.0),
]
GRID = list(itertools.product([1, 3], ["auto", "skip"], ["cpu", "cuda:0"], [1, 4], [("default",), ("a", "b")]))


@pytest.mark.parametrize(("n_t1w", "skull_strip", "device", "omp", "models"), GRID)
def test_build(tmp_path, n_t1w, skull_strip, device, omp, models):
    wf = init_brainparc_wf(
        T1WS[:n_t1w],
        bids_dir=Path("/d"),
        output_dir=tmp_path / "out",
        work_dir=tmp_path / "work",
        models=models,
        skull_strip=skull_strip,
        device=device,
        omp_nthreads=omp,
    )
    flat = wf._create_flat_graph()
    names = sorted(n.fullname for n in flat.nodes())
    assert sum(n.endswith(".parcellate") for n in names) == n_t1w
    assert sum(n.rsplit(".", 1)[-1].startswith("ds_") for n in names) == 6 * n_t1w
    for node in flat.nodes():
        if node.name == "parcellate":
            assert node.is_gpu_node() == device.startswith("cuda")
            assert node.n_procs == (1 if device.startswith("cuda") else omp)
            assert node.inputs.models == list(models) and node.inputs.skull_strip == skull_strip
            # N4 once: the parcellation reads the bias_correct output and skips its own N4; a recipe without N4
            # (reference) reads the T1w as acquired (raw_file) instead
            assert node.inputs.bias_corrected is True and node.inputs.recipe == "auto"
            edges = {u.name: flat.get_edge_data(u, v)["connect"] for u, v in flat.in_edges(node)}
            assert edges == {"bias_correct": [("out_file", "in_file")], "inputnode": [("t1w", "raw_file")]}
    assert not (tmp_path / "out").exists()  # building writes nothing
