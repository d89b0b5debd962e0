"""``DerivativesSink``: the ``ds_*`` nodes. A thin wrapper of :func:`brainparc.bids.derivatives.write_derivative`.

Why not niworkflows' ``DerivativesDataSink``: see the module docstring of :mod:`brainparc.bids.derivatives`.
"""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)


class _DerivativesSinkInputSpec(BaseInterfaceInputSpec):
    in_file = InputMultiObject(File(exists=True), mandatory=True, desc="file(s) to store, in order of ``keys``")
    source_file = File(mandatory=True, desc="the raw T1w the outputs derive from (names come from its entities)")
    base_directory = Directory(mandatory=True, desc="OUTPUT_DIR")
    keys = traits.List(traits.Str, mandatory=True, desc="output keys of brainparc.bids.derivatives.OUTPUTS")
    meta = traits.Dict(desc="JSON sidecar content (same for every key)")
    provenance = traits.Dict(desc="provenance of the parcellation node, summarised into the sidecar")


class _DerivativesSinkOutputSpec(TraitedSpec):
    out_file = traits.List(File(exists=True), desc="written files (images, tables and sidecars)")


class DerivativesSink(SimpleInterface):
    """Write outputs under their BIDS-derivatives names (atomic, dtype-cast, with sidecars)."""

    input_spec = _DerivativesSinkInputSpec
    output_spec = _DerivativesSinkOutputSpec
    _always_run = True  # outputs live outside the work dir: always (re)write them

    def _run_interface(self, runtime):
        from brainparc.bids.derivatives import provenance_meta, write_derivative

        if len(self.inputs.in_file) != len(self.inputs.keys):
            raise ValueError(f"{len(self.inputs.in_file)} files for {len(self.inputs.keys)} keys")
        meta = dict(self.inputs.meta or {})
        if self.inputs.provenance:
            meta.update(provenance_meta(self.inputs.provenance))
        written = []
        for in_file, key in zip(self.inputs.in_file, self.inputs.keys, strict=True):
            paths = write_derivative(in_file, self.inputs.source_file, self.inputs.base_directory, key, meta or None)
            written.extend(os.fspath(p) for p in paths)
        self._results["out_file"] = written
        return runtime
