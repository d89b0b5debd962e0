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
from brainparc.reports.figures import legend_groups, parcellation_colors, plot_overlay
from brainparc.reports.qc import (
    BRAIN,
    ICV,
    display_items,
    image_flags,
    mask_flags,
    participant_flags,
    sort_flags,
    summarise_flag,
)

STYLE = """body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}table{border-collapse:collapse;
font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right}.warning{color:#a05000}.error{color:#c00000}.notice{color:#555}
pre{white-space:pre-wrap;word-break:break-all}img{max-width:100%;display:block}details{margin:0.3em 0}
.caption{color:#444;font-size:13px;margin:0.2em 0}.banner{border:2px solid #888;background:#f4f4f4;padding:0.5em 1em;
margin:0.5em 0 1em}.banner.warn{border-color:#d08000;background:#fff3d6}.banner h2{margin:0.1em 0 0.3em;font-size:17px}
.banner ul{margin:0.2em 0;padding-left:1.2em}.banner code{font-size:12px}"""

#: Tissue colours of the overlay (index 0 background, 1 CSF, 2 GM, 3 WM) and how the caption names them.
TISSUE_COLORS = ["#000000", "#3080ff", "#ff4040", "#ffd000"]
TISSUE_CAPTION = "CSF blue, GM red, WM yellow"
#: Model statuses that need no warning (a card without ``status`` counts as not final, except official weights).
FINAL_STATUSES = ("final", "official")


def _stems(subject_dir: Path) -> list[str]:
    suffix = "_desc-aparcaseg_dseg.nii.gz"
    return sorted(str(p)[: -len(suffix)] for p in subject_dir.rglob(f"*{suffix}"))


def read_volumes(tsv: Path) -> dict[str, float]:
    """``{name: volume_mm3}`` from a ``*_volumes.tsv``."""
    with open(tsv, newline="", encoding="utf-8") as fh:
        return {row["name"]: float(row["volume_mm3"]) for row in csv.DictReader(fh, delimiter="\t")}


def _figures(stem: str, fig_dir: Path) -> list[tuple[str, str, Path]]:
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
    colors = parcellation_colors(dk)
    present = np.flatnonzero(np.bincount(idx.ravel().astype(np.int64), minlength=len(dk)))
    present = present[present > 0]
    n_cortex = sum(dk[i].group.startswith("cortex") for i in present)
    n_cortex_all = sum(lab.group.startswith("cortex") for lab in dk.labels)
    tissue_present = np.unique(np.asarray(tissue.dataobj))
    tissue_legend = [
        ("tissue", [(n, TISSUE_COLORS[k]) for k, n in ((1, "CSF"), (2, "GM"), (3, "WM")) if k in tissue_present])
    ]
    cortex_text = "no cortical parcel" if n_cortex == 0 else f"{n_cortex} of the {n_cortex_all} cortical parcels"
    return [
        (
            "Brain mask",
            f"Outline of the brain mask (red) on {anat_name}.",
            plot_overlay(anat, mask, fig_dir / f"{name}_desc-brain_mask.png", mode="contour"),
        ),
        (
            "Tissue classes",
            f"{TISSUE_CAPTION}, on {anat_name}. Ventricles should be CSF (blue).",
            plot_overlay(
                anat, tissue, fig_dir / f"{name}_desc-tissue_dseg.png", colors=TISSUE_COLORS, legend=tissue_legend
            ),
        ),
        (
            "Parcellation",
            f"{len(present)} of the {len(dk) - 1} labels present, {cortex_text} (legend: labels present, cortex by "
            "lobe; left and right share a colour except cerebral white matter: left blue, right orange). Colours are "
            "FreeSurfer's (desc-aparcaseg_dseg.tsv) but for the white matter and CSF (teal).",
            plot_overlay(
                anat,
                parc,
                fig_dir / f"{name}_desc-aparcaseg_dseg.png",
                colors=colors,
                legend=legend_groups(present, dk, colors),
            ),
        ),
    ]


def model_entries(provenances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct models (by task and sha256) named in provenance records (``Provenance`` of the sidecars)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for prov in provenances:
        for task, entry in (prov.get("models") or {}).items():
            if entry:
                seen.setdefault((task, str(entry.get("sha256"))), {"role": task, **entry})
    return list(seen.values())


def model_status(entry: dict[str, Any]) -> str:
    """The card's ``status``; ``official`` for the authors' weights; ``not recorded`` when the card has none."""
    return entry.get("status") or ("official" if entry.get("source") == "official" else "not recorded")


def model_banner(entries: list[dict[str, Any]]) -> str:
    """The models banner at the top of every report: name, sha256, recipe and status of each model.

    A status other than :data:`FINAL_STATUSES` (``preliminary``, not recorded, ...) makes it a visible warning.

    >>> banner = model_banner([{"role": "parcellation", "preset": "p", "sha256": "ab" * 32, "status": "preliminary"}])
    >>> "banner warn" in banner and "preliminary" in banner
    True
    """
    if not entries:
        return "<div class='banner warn'><h2>⚠ Models: unknown</h2><p>No provenance found.</p></div>"
    warn = [e for e in entries if model_status(e) not in FINAL_STATUSES]
    items = []
    for e in entries:
        status = model_status(e)
        cls = " class='warning'" if e in warn else ""
        sha = html.escape(str(e.get("sha256") or "n/a"))
        recipe = html.escape(str(e.get("recipe") or "not recorded"))
        items.append(
            f"<li><b>{html.escape(str(e.get('role', e.get('task', 'model'))))}</b>: "
            f"{html.escape(str(e.get('preset')))} ({html.escape(str(e.get('source') or 'n/a'))}), "
            f"<span{cls}>status: <b>{html.escape(status)}</b></span>; sha256 <code>{sha}</code>; recipe: {recipe}"
            + (f"<br><i>{html.escape(str(e['note']))}</i>" if e.get("note") and e in warn else "")
            + "</li>"
        )
    if warn:
        names = ", ".join(sorted({f"{e.get('preset')} ({model_status(e)})" for e in warn}))
        head = (
            f"<h2>⚠ Not final weights: {html.escape(names)}</h2><p>These results come from weights whose model card "
            "does not mark them final: labels may be missing or wrong. Do not use them for research results.</p>"
        )
        return f"<div class='banner warn'>{head}<ul>{''.join(items)}</ul></div>"
    return f"<div class='banner'><h2>Models</h2><ul>{''.join(items)}</ul></div>"


def flags_table(flags: list[dict[str, Any]]) -> str:
    """QC flags, most severe first: kind, severity, a summary naming the worst few, the full list folded."""
    if not flags:
        return "<p>none</p>"
    head = "<tr><th>flag</th><th>severity</th><th>summary</th></tr>"
    rows = []
    for flag in sort_flags(flags):
        sev = html.escape(flag["severity"])
        summary = html.escape(summarise_flag(flag).split(": ", 1)[1])
        if len(flag.get("items") or []) > 3:
            full = html.escape(", ".join(display_items(flag["items"])))
            summary += f"<details><summary>all {len(flag['items'])}</summary>{full}</details>"
        rows.append(
            f"<tr><td>{html.escape(flag['flag'])}</td><td><span class='{sev}'>{sev}</span></td><td>{summary}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


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
    flags = participant_flags(vols) + mask_flags((_provenance(stem).get("Provenance") or {}).get("mask_vs_labels"))
    try:
        flags += image_flags(*_qc_images(stem))
    except Exception as exc:  # report what is there, say what is not
        flags.append({"flag": "image_checks", "severity": "notice", "detail": f"not run: {exc}", "items": []})
    head.append("<h3>QC flags</h3>" + flags_table(flags))
    rows = [{"name": k, "volume (mm³)": round(v, 1), "% of ICV": round(100 * v / icv, 3)} for k, v in vols.items()]
    table = (
        "<details><summary>Volumes (mm³ and % of the intracranial volume)</summary>"
        + html_table(rows, ["name", "volume (mm³)", "% of ICV"])
        + "</details>"
    )
    return head, table


def _qc_images(stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...], np.ndarray]:
    """Mask, tissue, bias-corrected T1w, voxel size and affine of a scan: the arguments of :func:`image_flags`."""
    mask = nib.load(stem + "_desc-brain_mask.nii.gz")
    tissue = np.asarray(nib.load(stem + "_desc-tissue_dseg.nii.gz").dataobj)
    anat = np.asarray(nib.load(stem + "_desc-preproc_T1w.nii.gz").dataobj)
    zooms = tuple(float(z) for z in mask.header.get_zooms()[:3])
    return np.asarray(mask.dataobj) > 0, tissue, anat, zooms, mask.affine


def _provenance(stem: str) -> dict[str, Any]:
    side = Path(stem + "_desc-aparcaseg_dseg.json")
    return json.loads(side.read_text()) if side.is_file() else {}


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
    meta = _provenance(stem)
    if meta:
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
    stems = _stems(output_dir / f"sub-{subject}")
    body = [f"<h1>brainparc: sub-{html.escape(subject)}</h1>"]
    if stems:
        body.append(model_banner(model_entries([_provenance(stem).get("Provenance") or {} for stem in stems])))
    if bids_dir is not None:
        body.append(f"<p>Input dataset: {html.escape(str(bids_dir))}</p>")
    body.append("<h2>Errors</h2>" + (f"<pre class='error'>{html.escape(error)}</pre>" if error else "<p>none</p>"))
    if not stems:
        body.append("<p class='error'>No parcellation found for this participant.</p>")
    body.extend(_section(stem, out_html, fig_dir) for stem in stems)
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{html.escape(subject)}</title>"
    page += f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    return write_atomic(out_html, page)
