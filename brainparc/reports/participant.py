"""The per-participant HTML report ``OUTPUT_DIR/sub-XX.html`` (figures in ``sub-XX/figures/``).

Built from the derivatives alone (so ``--reports-only`` and failed runs can rebuild it), in a ``finally``-style
step of the participant level. One section per T1w: overlays (mask, tissue, parcellation), QC flags, the volume
table, provenance; plus the errors of the run.
"""

from __future__ import annotations

import csv
import html
import json
import numbers
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainparc import labels
from brainparc.reports.figures import plot_overlay
from brainparc.reports.qc import BRAIN, ICV, participant_flags

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;
font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right}.warning{color:#a05000}.error{color:#c00000}pre{white-space:pre-wrap;word-break:break-all}
img{max-width:100%;display:block}details{margin:0.5em 0}.caption{color:#444;font-size:13px;margin:0.2em 0}"""

#: Tissue colours of the overlay (index 0 background, 1 CSF, 2 GM, 3 WM) and how the caption names them.
TISSUE_COLORS = ["#000000", "#3080ff", "#ff5050", "#f0f0a0"]
TISSUE_CAPTION = "CSF blue, GM red, WM pale yellow"


def _stems(subject_dir: Path) -> list[str]:
    suffix = "_desc-aparcaseg_dseg.nii.gz"
    return sorted(str(p)[: -len(suffix)] for p in subject_dir.rglob(f"*{suffix}"))


def read_volumes(tsv: Path) -> dict[str, float]:
    """``{name: volume_mm3}`` from a ``*_volumes.tsv``."""
    with open(tsv, newline="", encoding="utf-8") as fh:
        return {row["name"]: float(row["volume_mm3"]) for row in csv.DictReader(fh, delimiter="\t")}


def _figures(stem: str, fig_dir: Path) -> list[tuple[str, Path]]:
    name = Path(stem).name
    anat_path = Path(stem + "_desc-preproc_T1w.nii.gz")
    parc_img = nib.load(stem + "_desc-aparcaseg_dseg.nii.gz")
    anat = nib.load(anat_path) if anat_path.is_file() else parc_img
    mask = nib.load(stem + "_desc-brain_mask.nii.gz")
    tissue = nib.load(stem + "_desc-tissue_dseg.nii.gz")
    dk = labels.dk_struct()
    idx = dk.from_freesurfer(np.asarray(parc_img.dataobj))
    parc = nib.Nifti1Image(idx.astype(np.int16), parc_img.affine)
    anat_name = "the bias-corrected T1w" if anat_path.is_file() else "the parcellation (no desc-preproc_T1w found)"
    return [
        (
            "Brain mask",
            f"Outline of the brain mask (red) on {anat_name}.",
            plot_overlay(anat, mask, fig_dir / f"{name}_desc-brain_mask.png", mode="contour"),
        ),
        (
            "Tissue classes",
            f"{TISSUE_CAPTION}, on {anat_name}.",
            plot_overlay(anat, tissue, fig_dir / f"{name}_desc-tissue_dseg.png", colors=TISSUE_COLORS),
        ),
        (
            "Parcellation",
            "Desikan-Killiany cortical and subcortical regions in FreeSurfer's colours (desc-aparcaseg_dseg.tsv).",
            plot_overlay(
                anat, parc, fig_dir / f"{name}_desc-aparcaseg_dseg.png", colors=[lab.color for lab in dk.labels]
            ),
        ),
    ]


def html_table(rows: list[dict[str, Any]], cols: list[str], raw: set[str] | frozenset[str] = frozenset()) -> str:
    """An HTML table; cells are escaped except the columns in ``raw`` (already HTML, e.g. links), numbers right-aligned.

    >>> html_table([{"a": "<b>", "n": 1.5}], ["a", "n"])
    '<table><tr><th>a</th><th>n</th></tr><tr><td>&lt;b&gt;</td><td class="num">1.5</td></tr></table>'
    """

    def cell(row: dict[str, Any], col: str) -> str:
        value = row.get(col, "")
        text = str(value) if col in raw else html.escape(str(value))
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return f'<td class="num">{text}</td>' if number else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(cell(r, c) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary(stem: str) -> tuple[list[str], str]:
    """The age / volume line and QC flags (first in a section), and the volume table (last)."""
    vol_tsv = Path(stem + "_desc-aparcaseg_volumes.tsv")
    side = Path(stem + "_desc-aparcaseg_volumes.json")
    age = json.loads(side.read_text()).get("age") if side.is_file() else None
    age_text = f"Age: {'unknown' if age is None else f'{age:g} years'}"
    if not vol_tsv.is_file():
        return [f"<p>{age_text}; no volume table found.</p>"], ""
    vols = read_volumes(vol_tsv)
    icv = vols.get(ICV) or float("nan")
    head = [
        f"<p>{age_text}; intracranial volume {icv / 1e6:.3f} L; brain (GM+WM) "
        f"{vols.get(BRAIN, float('nan')) / 1e6:.3f} L.</p>"
    ]
    flags = participant_flags(vols)
    for flag in flags:
        flag["severity"] = f"<span class='{flag['severity']}'>{html.escape(flag['severity'])}</span>"
    cols = ["flag", "severity", "detail"]
    head.append("<h3>QC flags</h3>" + (html_table(flags, cols, raw={"severity"}) if flags else "<p>none</p>"))
    rows = [{"name": k, "volume (mm³)": round(v, 1), "% of ICV": round(100 * v / icv, 3)} for k, v in vols.items()]
    table = (
        "<details><summary>Volumes (mm³ and % of the intracranial volume)</summary>"
        + html_table(rows, ["name", "volume (mm³)", "% of ICV"])
        + "</details>"
    )
    return head, table


def _section(stem: str, out_html: Path, fig_dir: Path) -> str:
    """One T1w: summary and QC flags, the three overlays, the volume table, provenance."""
    head, table = _summary(stem)
    parts = [f"<h2>{html.escape(Path(stem).name)}</h2>", *head]
    try:
        for title, caption, png in _figures(stem, fig_dir):
            rel = os.path.relpath(png, out_html.parent)
            parts.append(
                f"<h3>{html.escape(title)}</h3><p class='caption'>{html.escape(caption)}</p>"
                f"<img src='{html.escape(rel)}' alt='{html.escape(title)}'>"
            )
    except Exception as exc:  # report what is there, say what is not
        parts.append(f"<p class='error'>figures failed: {html.escape(str(exc))}</p>")
    parts.append(table)
    prov = Path(stem + "_desc-aparcaseg_dseg.json")
    if prov.is_file():
        meta = json.loads(prov.read_text())
        parts.append(
            f"<details><summary>Provenance</summary><pre>{html.escape(json.dumps(meta, indent=1))}</pre></details>"
        )
    return "\n".join(parts)


def write_participant_report(
    output_dir: str | os.PathLike, subject: str, bids_dir: str | os.PathLike | None = None, error: str | None = None
) -> Path:
    """Write ``OUTPUT_DIR/sub-<subject>.html`` from the derivatives present; returns its path."""
    from brainparc.outputs import write_atomic

    output_dir = Path(output_dir)
    out_html = output_dir / f"sub-{subject}.html"
    fig_dir = output_dir / f"sub-{subject}" / "figures"
    body = [f"<h1>brainparc: sub-{html.escape(subject)}</h1>"]
    if bids_dir is not None:
        body.append(f"<p>Input dataset: {html.escape(str(bids_dir))}</p>")
    body.append("<h2>Errors</h2>" + (f"<pre class='error'>{html.escape(error)}</pre>" if error else "<p>none</p>"))
    stems = _stems(output_dir / f"sub-{subject}")
    if not stems:
        body.append("<p class='error'>No parcellation found for this participant.</p>")
    body.extend(_section(stem, out_html, fig_dir) for stem in stems)
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{html.escape(subject)}</title>"
    page += f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    return write_atomic(out_html, page)
