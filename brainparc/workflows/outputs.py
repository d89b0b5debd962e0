"""Every derivatives sink of one T1w in one place: the output contract as nodes (``ds_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from brainparc.interfaces.bids import DerivativesSink

#: Fields of ``inputnode`` (the files the parcellation workflow hands over).
OUTPUT_FIELDS = ["source_file", "preproc", "mask", "tissue", "probseg", "aparcaseg", "volumes", "provenance"]


def init_ds_outputs_wf(output_dir: Path, sources: list[str], age: float | None, name: str = "ds_outputs_wf"):
    """Write one T1w's derivatives into ``output_dir`` under their BIDS-derivatives names.

    Steps
    -----
    1. ``ds_preproc``: bias-corrected T1w (``SkullStripped: false``).
    2. ``ds_mask``: brain mask (``Type: Brain``), uint8.
    3. ``ds_tissue`` and ``ds_probseg``: tissue dseg (int16) and CSF/GM/WM probseg (float32).
    4. ``ds_aparcaseg``: parcellation in FreeSurfer ids (int16) with model provenance.
    5. ``ds_volumes``: regional volume table (mm³) with the age, if known.

    Inputs
    ------
    source_file, preproc, mask, tissue, probseg, aparcaseg, volumes, provenance

    Outputs
    -------
    out_files
        Every file written.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    # outputs are on the input grid: the raw T1w is the spatial reference
    base: dict[str, Any] = {"Sources": list(sources), "SpatialReference": sources[0]}
    sinks = {
        "ds_preproc": ("preproc", ["preproc"], {**base, "SkullStripped": False, "Description": "N4-corrected T1w"}),
        "ds_mask": ("mask", ["mask"], {**base, "Type": "Brain", "Description": "Brain mask"}),
        "ds_tissue": ("tissue", ["tissue"], {**base, "Description": "Tissue classes (desc-tissue_dseg.tsv)"}),
        "ds_probseg": (
            "probseg",
            ["probseg_CSF", "probseg_GM", "probseg_WM"],
            {**base, "Description": "Tissue probability"},
        ),
        "ds_aparcaseg": ("aparcaseg", ["aparcaseg"], {**base, "Description": "FreeSurfer ids (aparc+aseg LUT)"}),
        "ds_volumes": ("volumes", ["volumes"], {**base, "age": age, "Units": "mm3"}),
    }
    merge = pe.Node(niu.Merge(len(sinks)), name="merge", run_without_submitting=True)
    for i, (node_name, (field, keys, meta)) in enumerate(sinks.items(), start=1):
        sink = pe.Node(
            DerivativesSink(base_directory=str(output_dir), keys=keys, meta=meta),
            name=node_name,
            run_without_submitting=True,
        )
        workflow.connect([
            (inputnode, sink, [("source_file", "source_file"), (field, "in_file")]),
            (sink, merge, [("out_file", f"in{i}")]),
        ])  # fmt: skip
        if node_name == "ds_aparcaseg":
            workflow.connect(inputnode, "provenance", sink, "provenance")
    workflow.connect(merge, "out", outputnode, "out_files")
    return workflow
