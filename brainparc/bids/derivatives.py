"""The BIDS-derivatives output contract: file names, sidecars, dtypes and the dataset-level files.

Decision: a small sink on pybids' ``build_path``, not niworkflows' ``DerivativesDataSink``
-----------------------------------------------------------------------------------------
niworkflows' sink is the field's reference, but importing ``niworkflows.interfaces.bids`` imports TemplateFlow,
whose configuration module creates a stub under ``TEMPLATEFLOW_HOME`` (``~/.cache/templateflow`` by default) at
import time. A BIDS App must run with a read-only or absent home (containers, ``--read-only``), and brainparc
writes no standard-space outputs, so TemplateFlow would be a heavy dependency for nothing. What we need from the
sink is small and testable in isolation: (1) names from the source file's entities through one pybids path
pattern (the same ``build_path`` niworkflows uses), (2) dtype casting as niworkflows does (mask ``uint8``,
``dseg`` ``int16``, ``probseg`` ``float32``), (3) JSON sidecars, (4) atomic writes. Those are the functions
below, checked by a table of ``(source, entities) -> expected path`` cases in ``tests/bids/test_derivatives.py``
(in the manner of niworkflows' ``test_bids.py``). If brainparc later writes template-space outputs, switching
``brainparc.interfaces.bids.DerivativesSink`` to niworkflows' sink is a local change.

Shared files (``dataset_description.json``, the ``dseg.tsv`` lookup tables, ``.bidsignore``) are written once, by
the main process, before any participant runs (:func:`init_derivatives`), so parallel participants never race.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainparc import __version__, labels
from brainparc.outputs import save_nifti_atomic, write_atomic, write_json_atomic

CODE_URL = "https://github.com/brainparc/brainparc"
BIDS_VERSION = "1.10.0"

#: One pybids pattern for every per-T1w derivative (no ``space-``: outputs are on the input grid).
PATTERN = (
    "sub-{subject}[/ses-{session}]/anat/sub-{subject}[_ses-{session}][_acq-{acquisition}][_ce-{ceagent}]"
    "[_rec-{reconstruction}][_run-{run}][_label-{label}][_desc-{desc}]"
    "_{suffix<T1w|mask|dseg|probseg|volumes>}{extension<.nii.gz|.json|.tsv>|.nii.gz}"
)

#: Source entities carried over into derivative names.
KEPT_ENTITIES = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")

#: The per-T1w outputs: name entities and the on-disk dtype (niworkflows' conventions).
OUTPUTS: dict[str, dict[str, Any]] = {
    "preproc": {"desc": "preproc", "suffix": "T1w", "dtype": "float32"},
    "mask": {"desc": "brain", "suffix": "mask", "dtype": "uint8"},
    "tissue": {"desc": "tissue", "suffix": "dseg", "dtype": "int16"},
    "probseg_CSF": {"label": "CSF", "suffix": "probseg", "dtype": "float32"},
    "probseg_GM": {"label": "GM", "suffix": "probseg", "dtype": "float32"},
    "probseg_WM": {"label": "WM", "suffix": "probseg", "dtype": "float32"},
    "aparcaseg": {"desc": "aparcaseg", "suffix": "dseg", "dtype": "int16"},
    "volumes": {"desc": "aparcaseg", "suffix": "volumes", "extension": ".tsv"},
}

#: BIDS common image-derived labels (derivatives appendix): GM 1, WM 2, CSF 3.
BIDS_TISSUE_MAPPING = {0: 0, 1: 3, 2: 1, 3: 2}

#: Non-BIDS outputs (the deno validator matches folders written without a trailing slash).
BIDSIGNORE = ("*_volumes.tsv", "*_volumes.json", "logs", "group", "*.html", "sub-*/figures", "sub-*/log")


def derivative_path(source: str | os.PathLike, **entities: Any) -> Path:
    """Relative derivative path for ``source`` (a raw BIDS T1w) with the given extra entities.

    >>> str(derivative_path("/d/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz", desc="brain", suffix="mask"))
    'sub-01/ses-1/anat/sub-01_ses-1_run-1_desc-brain_mask.nii.gz'
    """
    from bids.layout import parse_file_entities
    from bids.layout.writing import build_path

    src = parse_file_entities(os.fspath(source))
    if "subject" not in src:
        raise ValueError(f"{source} is not a BIDS file name (no sub- entity)")
    ents = {k: src[k] for k in KEPT_ENTITIES if k in src}
    ents.update({k: v for k, v in entities.items() if k != "dtype" and v is not None})
    if "run" in ents:  # keep the source's zero padding (run-01 stays run-01)
        ents["run"] = _raw_entity(source, "run") or ents["run"]
    path = build_path(ents, [PATTERN], strict=False)
    if path is None:
        raise ValueError(f"cannot name a derivative of {source} with {entities}")
    return Path(path)


def _raw_entity(source: str | os.PathLike, key: str) -> str | None:
    for part in Path(source).name.split("_"):
        if part.startswith(f"{key}-"):
            return part[len(key) + 1 :]
    return None


def cast_image(img: nib.spatialimages.SpatialImage, dtype: str | None) -> nib.Nifti1Image:
    """Return ``img`` as NIfTI-1 with data (and header) of ``dtype``; integer targets are rounded."""
    if dtype is None:
        return img
    data = np.asanyarray(img.dataobj)
    target = np.dtype(dtype)
    if np.issubdtype(target, np.integer) and not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data)
    out = nib.Nifti1Image(data.astype(target), img.affine, img.header)
    out.header.set_data_dtype(target)
    out.header.set_slope_inter(1.0, 0.0)
    out.header.set_xyzt_units("mm")
    return out


def write_derivative(
    in_file: str | os.PathLike,
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    key: str,
    meta: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Copy one output into the derivatives tree under its contract name (atomic), plus its JSON sidecar."""
    spec = dict(OUTPUTS[key])
    dtype = spec.pop("dtype", None)
    rel = derivative_path(source, **spec)
    dest = Path(output_dir) / rel
    written = []
    if str(rel).endswith(".nii.gz"):
        written.append(save_nifti_atomic(cast_image(nib.load(os.fspath(in_file)), dtype), dest))
    else:
        written.append(write_atomic(dest, Path(in_file).read_bytes()))
    if meta:
        sidecar = dest.with_name(dest.name.split(".")[0] + ".json")
        written.append(write_json_atomic(sidecar, dict(meta)))
    return written


def provenance_meta(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Sidecar fields of ``desc-aparcaseg_dseg.json`` from the pipeline's provenance record."""
    model = (provenance.get("models") or {}).get("parcellation") or {}
    timings = provenance.get("timings_s") or {}
    return {
        "ModelName": model.get("preset"),
        "ModelVersion": model.get("version"),
        "ModelSHA256": model.get("sha256"),
        "Device": provenance.get("device"),
        "InferenceRecipe": (provenance.get("inference_recipe") or {}).get("name"),
        "RuntimeSeconds": round(sum(v for k, v in timings.items() if k != "total"), 3),
        "SoftwareVersion": provenance.get("brainparc_version"),
        "Provenance": dict(provenance),
    }


def dataset_description(bids_dir: Path, container: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``dataset_description.json`` of the derivatives (``GeneratedBy``, ``SourceDatasets``, ``DatasetLinks``)."""
    generated: dict[str, Any] = {"Name": "brainparc", "Version": __version__, "CodeURL": CODE_URL}
    if container:
        generated["Container"] = dict(container)
    source: dict[str, Any] = {"URL": Path(bids_dir).resolve().as_uri()}
    raw_desc = Path(bids_dir) / "dataset_description.json"
    if raw_desc.is_file():
        import json

        try:
            raw = json.loads(raw_desc.read_text())
            source.update({k: raw[k] for k in ("DatasetDOI", "Name") if k in raw})
        except ValueError:
            pass
    if "DatasetDOI" in source:
        source["DOI"] = source.pop("DatasetDOI")
    source.pop("Name", None)
    return {
        "Name": "brainparc derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": Path(bids_dir).resolve().as_uri()},
    }


def container_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """``GeneratedBy.Container`` from ``BRAINPARC_CONTAINER`` (``docker``/``singularity``) and ``..._TAG``."""
    kind = environ.get("BRAINPARC_CONTAINER")
    if not kind:
        return None
    out = {"Type": kind}
    if environ.get("BRAINPARC_CONTAINER_TAG"):
        out["Tag"] = environ["BRAINPARC_CONTAINER_TAG"]
    return out


def dseg_tables() -> dict[str, str]:
    """The two top-level lookup tables (``index name abbreviation color mapping``), as TSV text."""
    header = "index\tname\tabbreviation\tcolor\tmapping"
    dk = labels.dk_struct()
    rows = [f"{lab.freesurfer_id}\t{lab.name}\t{lab.abbreviation}\t{lab.color}\t" for lab in dk.labels[1:]]
    rows = [r + str(BIDS_TISSUE_MAPPING[lab.tissue]) for r, lab in zip(rows, dk.labels[1:], strict=True)]
    tis = labels.tissue()
    trows = [
        f"{lab.index}\t{lab.name}\t{lab.abbreviation}\t{lab.color}\t{BIDS_TISSUE_MAPPING[lab.index]}"
        for lab in tis.labels[1:]
    ]
    return {
        "desc-aparcaseg_dseg.tsv": "\n".join([header, *rows]) + "\n",
        "desc-tissue_dseg.tsv": "\n".join([header, *trows]) + "\n",
    }


def init_derivatives(output_dir: Path, bids_dir: Path, container: Mapping[str, str] | None = None) -> list[Path]:
    """Write the dataset-level files once, atomically, before any participant runs (main process only)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"dataset_description.json": None, **dseg_tables(), ".bidsignore": "\n".join(BIDSIGNORE) + "\n"}
    written = []
    for name, text in files.items():
        path = output_dir / name
        if name == "dataset_description.json":
            written.append(write_json_atomic(path, dataset_description(bids_dir, container)))
        elif not path.is_file() or path.read_text() != text:
            written.append(write_atomic(path, text))
    return written
