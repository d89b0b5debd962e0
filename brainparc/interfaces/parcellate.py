"""The parcellation node (the GPU step) and the bias-corrected T1w on the input grid.

N4 runs once per image: ``BiasCorrect`` writes the corrected T1w (the ``desc-preproc_T1w`` output) and the workflow
feeds that file to ``Parcellate`` with ``bias_corrected=True``, which skips the pipeline's own N4.

GPU scheduling: nipype's MultiProc plugin counts a node as a GPU job when its inputs have ``use_gpu=True``
(``Node.is_gpu_node``) and runs at most ``n_gpu_procs`` GPU slots at once (plugin argument; default: the number of
GPUs ``nvidia-smi`` lists). The workflow sets ``use_gpu`` when ``--device`` is a CUDA device and gives the node
``n_procs=1`` GPU slot, so there is at most one parcellation per GPU at a time. ``brainparc.cli.run`` never lets
``n_gpu_procs`` be 0 (nipype's default where ``nvidia-smi`` is missing, which would never schedule the node);
``--plugin-args '{"n_gpu_procs": N}'`` overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _ParcellateInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image (NIfTI/MGH)")
    bias_corrected = traits.Bool(
        False, usedefault=True, desc="in_file is already N4-corrected on its own grid (BiasCorrect's output): no N4"
    )
    raw_file = File(exists=True, desc="the uncorrected T1w, parcellated instead of in_file by recipes without N4")
    recipe = traits.Enum("auto", "reference", "fast", usedefault=True, desc="inference recipe (as --recipe)")
    models = traits.List(traits.Str, mandatory=True, desc="'default' or weight paths (as --model)")
    skull_strip = traits.Enum("auto", "force", "skip", usedefault=True)
    device = traits.Str("auto", usedefault=True, desc="auto | cpu | cuda | cuda:N")
    nthreads = traits.Int(1, usedefault=True, desc="CPU threads for torch and ANTs")
    use_gpu = traits.Bool(False, usedefault=True, desc="marks the node as a GPU job for MultiProc")
    progress = traits.Str(
        "", usedefault=True, nohash=True, desc="label of the progress bars on stderr ('' for none); not hashed"
    )


class _ParcellateOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask (uint8)")
    out_brain = File(exists=True, desc="skull-stripped, bias-corrected brain")
    out_tissue = File(exists=True, desc="tissue dseg (0 bg, 1 CSF, 2 GM, 3 WM)")
    out_probseg = traits.List(File(exists=True), desc="CSF, GM, WM probability maps")
    out_aparcaseg = File(exists=True, desc="parcellation in FreeSurfer ids (int16)")
    out_volumes = File(exists=True, desc="regional volumes (TSV, mm³)")
    provenance = traits.Dict(desc="models, device, timings")


class Parcellate(SimpleInterface):
    """Skull-strip and parcellate one T1w with :func:`brainparc.pipeline.parcellate_image`."""

    input_spec = _ParcellateInputSpec
    output_spec = _ParcellateOutputSpec

    def _run_interface(self, runtime):
        from brainparc.core.io import load_t1w
        from brainparc.inference.recipes import recipe_for
        from brainparc.pipeline import ParcellateOptions, load_models, parcellate_image

        models = load_models(self.inputs.models)
        in_file, corrected = self.inputs.in_file, self.inputs.bias_corrected
        if isdefined(self.inputs.raw_file) and not recipe_for(models.parc_card, self.inputs.recipe).bias_correct:
            in_file, corrected = self.inputs.raw_file, False  # the recipe runs no N4: the T1w as acquired
        opts = ParcellateOptions(
            skull_strip=self.inputs.skull_strip,
            device=self.inputs.device,
            nthreads=self.inputs.nthreads,
            bias_correct=not corrected,
            recipe=self.inputs.recipe,
            progress=self.inputs.progress or False,
        )
        out = parcellate_image(load_t1w(in_file), models, opts)
        self._results.update(split_and_save(out, Path(runtime.cwd)))
        return runtime


def split_and_save(out, folder: Path) -> dict:
    """Save :class:`~brainparc.pipeline.ParcellationOutputs` as separate files in ``folder`` (the node's cwd)."""
    import nibabel as nib
    import numpy as np

    from brainparc import labels
    from brainparc.core.volumes import rows_to_tsv
    from brainparc.outputs import save_nifti_atomic, write_atomic
    from brainparc.pipeline import volume_rows

    def save(img, name):
        return os.fspath(save_nifti_atomic(img, folder / name))

    parc = np.asarray(out.parc.dataobj).astype(np.int16)
    fs = nib.Nifti1Image(labels.dk_struct().to_freesurfer(parc).astype(np.int16), out.parc.affine)
    probs = np.asarray(out.tissue_probs.dataobj, dtype=np.float32)
    rows = volume_rows(parc, np.asarray(out.tissue.dataobj), np.asarray(out.mask.dataobj), out.mask.header.get_zooms())
    return {
        "out_mask": save(out.mask, "brain_mask.nii.gz"),
        "out_brain": save(out.brain, "brain.nii.gz"),
        "out_tissue": save(out.tissue, "tissue_dseg.nii.gz"),
        "out_probseg": [
            save(nib.Nifti1Image(probs[..., k], out.mask.affine), f"label-{name}_probseg.nii.gz")
            for k, name in ((1, "CSF"), (2, "GM"), (3, "WM"))
        ],
        "out_aparcaseg": save(fs, "aparcaseg_dseg.nii.gz"),
        "out_volumes": os.fspath(write_atomic(folder / "volumes.tsv", rows_to_tsv(rows))),
        "provenance": out.provenance,
    }


class _BiasCorrectInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w image")
    nthreads = traits.Int(1, usedefault=True)


class _BiasCorrectOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="N4-corrected T1w on the input grid (float32)")


class BiasCorrect(SimpleInterface):
    """N4 bias-field correction of the whole T1w on its own grid (:func:`brainparc.core.bias.n4`).

    The same call, on the same grid, as the first stage of :func:`brainparc.pipeline.parcellate_image`.
    """

    input_spec = _BiasCorrectInputSpec
    output_spec = _BiasCorrectOutputSpec

    def _run_interface(self, runtime):
        from brainparc.core.bias import n4
        from brainparc.core.io import load_t1w
        from brainparc.outputs import save_nifti_atomic

        out = Path(runtime.cwd) / "desc-preproc_T1w.nii.gz"
        save_nifti_atomic(n4(load_t1w(self.inputs.in_file), nthreads=self.inputs.nthreads), out)
        self._results["out_file"] = os.fspath(out)
        return runtime
