"""The participant-level workflow: one sub-workflow per selected T1w, all under ``brainparc_wf``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainparc.bids.layout import T1wInput, bids_uri
from brainparc.interfaces.parcellate import BiasCorrect, Parcellate
from brainparc.workflows.outputs import init_ds_outputs_wf

#: Memory (GB) the scheduler reserves for one parcellation node (model + 107-channel probabilities).
PARCELLATE_MEM_GB = 4.0


def is_gpu_device(device: str) -> bool:
    """``cuda``/``cuda:N`` run on a GPU; ``auto`` is treated as GPU only when CUDA is visible at build time.

    >>> is_gpu_device("cuda:1"), is_gpu_device("cpu")
    (True, False)
    """
    if device.startswith("cuda"):
        return True
    if device == "auto":
        from nipype.utils.gpu_count import gpu_count

        return gpu_count() > 0
    return False


def init_brainparc_wf(
    t1w_inputs: Sequence[T1wInput],
    bids_dir: Path,
    output_dir: Path,
    work_dir: Path,
    models: Sequence[str],
    skull_strip: str = "auto",
    device: str = "auto",
    omp_nthreads: int = 1,
    name: str = "brainparc_wf",
    recipe: str = "auto",
    progress: bool = False,
) -> pe.Workflow:
    """Build the participant-level workflow.

    Parameters
    ----------
    t1w_inputs
        The T1w images selected by :func:`brainparc.bids.layout.collect_t1w`.
    bids_dir, output_dir, work_dir
        Input dataset, derivatives folder and nipype's cache (``base_dir``).
    models, skull_strip, device, omp_nthreads, recipe
        As the command-line flags ``--model``, ``--skull-strip``, ``--device``, ``--omp-nthreads``, ``--recipe``.
    progress
        Progress bars of the parcellation nodes on stderr (not part of the nodes' hashes: a cached run stays cached).
    """
    workflow = pe.Workflow(name=name)
    workflow.base_dir = str(work_dir)
    for t1w in t1w_inputs:
        single = init_single_t1w_wf(
            t1w,
            bids_dir=bids_dir,
            output_dir=output_dir,
            models=models,
            skull_strip=skull_strip,
            device=device,
            omp_nthreads=omp_nthreads,
            name=f"single_t1w_{t1w.key}_wf",
            recipe=recipe,
            progress=progress,
        )
        workflow.add_nodes([single])
    return workflow


def init_single_t1w_wf(
    t1w: T1wInput,
    bids_dir: Path,
    output_dir: Path,
    models: Sequence[str],
    skull_strip: str = "auto",
    device: str = "auto",
    omp_nthreads: int = 1,
    name: str = "single_t1w_wf",
    recipe: str = "auto",
    progress: bool = False,
) -> pe.Workflow:
    """Process one T1w image: bias correction, skull stripping and parcellation, then the derivatives.

    Steps
    -----
    1. ``bias_correct``: N4 on the input grid (``desc-preproc_T1w``), the only N4 of this image.
    2. ``parcellate``: on that corrected image, conform, skull strip, Sobel edges, BrainParc cascade, clean-up, back
       to the input grid (:func:`brainparc.pipeline.parcellate_image` without its own N4); the GPU node, one job per
       GPU. A recipe without N4 (``reference``) parcellates the input T1w itself.
    3. ``ds_outputs_wf``: the derivatives (:func:`init_ds_outputs_wf`).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        "The T1w image was skull-stripped and parcellated into 106 regions with BrainParc "
        f"(brainparc; models: {', '.join(models)})."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    inputnode.inputs.t1w = str(t1w.path)

    # Stage 1: bias-corrected T1w on the input grid
    bias_correct = pe.Node(BiasCorrect(nthreads=omp_nthreads), name="bias_correct", n_procs=omp_nthreads)

    # Stage 2: skull strip + parcellation of the corrected T1w (the GPU node; no second N4)
    use_gpu = is_gpu_device(device)
    parcellate = pe.Node(
        Parcellate(
            bias_corrected=True,
            models=list(models),
            skull_strip=skull_strip,
            device=device,
            nthreads=omp_nthreads,
            use_gpu=use_gpu,
            recipe=recipe,
            progress=t1w.path.name.split(".")[0] if progress else "",
        ),
        name="parcellate",
        n_procs=1 if use_gpu else omp_nthreads,
        mem_gb=PARCELLATE_MEM_GB,
    )

    # Stage 3: derivatives
    ds_outputs_wf = init_ds_outputs_wf(output_dir, [bids_uri(t1w.path, bids_dir)], t1w.age)
    ds_outputs_wf.inputs.inputnode.source_file = str(t1w.path)
    workflow.connect([
        (inputnode, bias_correct, [("t1w", "in_file")]),
        (inputnode, parcellate, [("t1w", "raw_file")]),
        (bias_correct, parcellate, [("out_file", "in_file")]),
        (bias_correct, ds_outputs_wf, [("out_file", "inputnode.preproc")]),
        (parcellate, ds_outputs_wf, [
            ("out_mask", "inputnode.mask"),
            ("out_tissue", "inputnode.tissue"),
            ("out_probseg", "inputnode.probseg"),
            ("out_aparcaseg", "inputnode.aparcaseg"),
            ("out_volumes", "inputnode.volumes"),
            ("provenance", "inputnode.provenance"),
        ]),
    ])  # fmt: skip
    return workflow
