"""Group level: ``group/volumes.tsv``, ``group/qc.tsv`` and ``group/report.html``, from OUTPUT_DIR only."""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainparc.reports.figures import plot_distributions, plot_vs_age
from brainparc.reports.participant import STYLE, html_table, model_banner, model_entries, read_volumes
from brainparc.reports.qc import (
    BRAIN,
    ICV,
    SEVERITIES,
    TOTALS,
    Z_OUTLIER,
    bands_for,
    display_items,
    display_name,
    participant_flags,
    robust_z,
    sort_flags,
    summarise_flag,
)

SUFFIX = "_desc-aparcaseg_volumes.tsv"


def _entity(name: str, key: str) -> str:
    part = next((p for p in name.split("_") if p.startswith(f"{key}-")), None)
    return part[len(key) + 1 :] if part else "n/a"


def collect_volumes(output_dir: Path, participants: Sequence[str] = ()) -> pd.DataFrame:
    """One row per processed T1w: ids, age, total volumes and every region (mm³)."""
    wanted = {p.removeprefix("sub-") for p in participants}
    rows = []
    for tsv in sorted(output_dir.glob(f"sub-*/**/*{SUFFIX}")):
        name = tsv.name[: -len(SUFFIX)]
        sub = _entity(name, "sub")
        if wanted and sub not in wanted:
            continue
        side = tsv.with_name(tsv.name.replace(".tsv", ".json"))
        age = json.loads(side.read_text()).get("age") if side.is_file() else None
        row = {
            "participant_id": f"sub-{sub}",
            "session_id": "n/a" if _entity(name, "ses") == "n/a" else f"ses-{_entity(name, 'ses')}",
            "acquisition": _entity(name, "acq"),
            "run": _entity(name, "run"),
            "age": np.nan if age is None else float(age),
            "report": f"sub-{sub}.html",
        }
        row.update(read_volumes(tsv))
        rows.append(row)
    return pd.DataFrame(rows)


def band_z(frame: pd.DataFrame, bands: pd.Series) -> pd.DataFrame:
    """Robust z-score of every column within each age band (zeros in bands of fewer than 3 scans)."""
    z = pd.DataFrame(0.0, index=frame.index, columns=frame.columns)
    for band in bands.unique():
        members = bands == band
        for col in frame.columns:
            z.loc[members, col] = robust_z(frame.loc[members, col].to_numpy(dtype=float))
    return z


def tissue_totals(volumes: pd.DataFrame) -> pd.DataFrame:
    """ICV (mm³) and the tissue volumes as fractions of it: the totals the group level judges."""
    icv = volumes[ICV].replace(0, np.nan)
    out = pd.DataFrame({"Intracranial volume": volumes[ICV]}, index=volumes.index)
    for name in ("Tissue CSF", "Tissue GM", "Tissue WM", BRAIN):
        out[f"{name.removeprefix('Tissue ')} / ICV"] = volumes[name] / icv
    return out


def qc_table(volumes: pd.DataFrame, regions: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Robust z-scores of ICV-normalised regional volumes within age bands, plus per-scan flags.

    Returns ``(qc, outliers)``: one QC row per scan, and a boolean frame (scan × region) of outliers.
    """
    ages = [None if np.isnan(a) else a for a in volumes["age"]]
    bands = pd.Series(bands_for(ages), index=volumes.index)
    rel = volumes[list(regions)].div(volumes[ICV].replace(0, np.nan), axis=0)
    outliers = band_z(rel, bands).abs() > Z_OUTLIER
    totals = tissue_totals(volumes)
    totals_z = band_z(totals, bands)
    total_out = totals_z.abs() > Z_OUTLIER
    qc = volumes[["participant_id", "session_id", "acquisition", "run", "age"]].copy()
    qc["age_band"] = bands
    qc["icv_robust_z"] = totals_z["Intracranial volume"].round(2)
    qc["n_outlier_regions"] = outliers.sum(axis=1)
    qc["outlier_regions"] = [", ".join(c for c in regions if outliers.loc[i, c]) or "n/a" for i in volumes.index]
    qc["outlier_totals"] = [", ".join(c for c in totals if total_out.loc[i, c]) or "n/a" for i in volumes.index]
    qc["flags"] = ["; ".join(f"{f['flag']}: {f['detail']}" for f in fl) or "n/a" for fl in scan_flags(volumes, regions)]
    return qc, outliers


def scan_flags(volumes: pd.DataFrame, regions: Sequence[str]) -> list[list[dict]]:
    """The QC flags of every scan (rows of ``volumes``), most severe first."""
    return [participant_flags({c: volumes.loc[i, c] for c in (*regions, *TOTALS)}) for i in volumes.index]


def _provenances(output_dir: Path, participants: Sequence[str]) -> list[dict]:
    """The ``Provenance`` records of the parcellations of ``participants``."""
    out = []
    for side in sorted(output_dir.glob("sub-*/**/*_desc-aparcaseg_dseg.json")):
        if side.name.split("_")[0] in participants:
            out.append(json.loads(side.read_text()).get("Provenance") or {})
    return out


def run_group_level(output_dir: str | os.PathLike, participants: Sequence[str] = ()) -> dict[str, Path]:
    """Write the group outputs; raises ``FileNotFoundError`` when no participant output exists."""
    from brainparc.outputs import write_atomic

    output_dir = Path(output_dir)
    volumes = collect_volumes(output_dir, participants)
    if volumes.empty:
        raise FileNotFoundError(f"no *{SUFFIX} under {output_dir}: run the participant level first")
    group = output_dir / "group"
    regions = [c for c in volumes.columns[6:] if c not in TOTALS]
    qc, outliers = qc_table(volumes, regions)
    paths = {
        "volumes": write_atomic(
            group / "volumes.tsv", volumes.drop(columns="report").to_csv(sep="\t", index=False, na_rep="n/a")
        ),
        "qc": write_atomic(group / "qc.tsv", qc.to_csv(sep="\t", index=False, na_rep="n/a")),
    }
    labels = (volumes["participant_id"] + " " + volumes["session_id"].replace("n/a", "")).str.strip()
    rel = volumes[regions].div(volumes[ICV].replace(0, np.nan), axis=0)
    totals = tissue_totals(volumes)
    total_out = band_z(totals, qc["age_band"]).abs() > Z_OUTLIER
    figs = [
        (
            "Regional volumes",
            "Each region's volume as a fraction of the scan's intracranial volume, divided by the group median of "
            "that fraction (1 = typical). Left and right homologues share a row. Red crosses: robust z-score beyond "
            f"{Z_OUTLIER} within the scan's age band (bands of fewer than 3 scans flag nothing).",
            plot_distributions(
                rel / rel.median(),
                outliers,
                group / "figures" / "regional_volumes.png",
                title="Regional volumes (fraction of ICV, relative to the group median)",
                xlabel="(volume / ICV) / group median",
                labels=labels,
            ),
        ),
        (
            "Totals",
            "Intracranial volume and the tissue volumes as fractions of it, each divided by its group median; "
            "outliers as above.",
            plot_distributions(
                totals / totals.median(),
                total_out,
                group / "figures" / "total_volumes.png",
                title="Intracranial volume and tissue fractions (relative to the group median)",
                xlabel="value / group median",
                labels=labels,
            ),
        ),
    ]
    if volumes["age"].notna().sum() >= 2:
        ok = volumes["age"].notna()
        series = {c: volumes.loc[ok, c] for c in (ICV, BRAIN, "Tissue GM", "Tissue WM")}
        png = plot_vs_age(volumes.loc[ok, "age"].to_numpy(), series, group / "figures" / "volumes_vs_age.png")
        figs.append(("Lifespan chart", "Total volumes (litres) against age (years).", png))
    flags = scan_flags(volumes, regions)
    banner = model_banner(model_entries(_provenances(output_dir, list(volumes["participant_id"].unique()))))
    paths["report"] = write_atomic(group / "report.html", _html(volumes, qc, flags, figs, group, banner))
    return paths


def _folded(names: Sequence[str], n_named: int = 3) -> str:
    """HTML: the first ``n_named`` names, the full list folded when longer."""
    if not names:
        return "none"
    text = html.escape(", ".join(names[:n_named]))
    if len(names) > n_named:
        text += f" and {len(names) - n_named} more<details><summary>all {len(names)}</summary>"
        text += html.escape(", ".join(names)) + "</details>"
    return text


def _flags_cell(flags: list[dict]) -> str:
    """HTML: one line per flag kind (severity, count, worst few named), most severe first; long lists folded."""
    if not flags:
        return "none"
    lines = []
    for flag in sort_flags(flags):
        sev = html.escape(flag["severity"])
        items = flag.get("items") or []
        text = html.escape(summarise_flag(flag))
        if len(items) > 3:
            text += f"<details><summary>all {len(items)}</summary>"
            text += html.escape(", ".join(display_items(items))) + "</details>"
        lines.append(f"<div><span class='{sev}'>{sev}</span> {text}</div>")
    return "".join(lines)


def _html(
    volumes: pd.DataFrame,
    qc: pd.DataFrame,
    flags: list[list[dict]],
    figs: list[tuple[str, str, Path]],
    group: Path,
    banner: str,
) -> str:
    imgs = "".join(
        f"<h3>{html.escape(name)}</h3><p class='caption'>{html.escape(caption)}</p>"
        f"<img src='{html.escape(os.path.relpath(png, group))}' alt='{html.escape(name)}'>"
        for name, caption, png in figs
    )
    rows = []
    for i, (row, scan_flags_) in enumerate(zip(qc.to_dict("records"), flags, strict=True)):
        report = volumes["report"].iloc[i]
        outliers = [display_name(n) for n in str(row["outlier_regions"]).split(", ") if n != "n/a"]
        totals = [n for n in str(row["outlier_totals"]).split(", ") if n != "n/a"]
        rank = min((SEVERITIES.index(f["severity"]) for f in scan_flags_), default=len(SEVERITIES))
        rows.append(
            (
                (rank, -len(outliers) - len(totals), -len(scan_flags_), i),  # most severe first, then most outliers
                {
                    "scan": f"<a href='../{html.escape(report)}'>{html.escape(report)}</a>"
                    + "".join(
                        f" {html.escape(str(row[k]))}" for k in ("session_id", "acquisition", "run") if row[k] != "n/a"
                    ),
                    "age": "n/a" if pd.isna(row["age"]) else f"{row['age']:g}",
                    "age band": html.escape(str(row["age_band"])),
                    "ICV robust z": "n/a" if pd.isna(row["icv_robust_z"]) else row["icv_robust_z"],
                    "QC flags (most severe first)": _flags_cell(scan_flags_),
                    "outliers within the age band": (
                        f"{len(outliers)} regions: {_folded(outliers)}" if outliers else "none"
                    )
                    + (f"; totals: {html.escape(', '.join(totals))}" if totals else ""),
                },
            )
        )
    rows.sort(key=lambda r: r[0])
    cols = list(rows[0][1]) if rows else []
    n_flagged = sum(
        1 for _, r in rows if r["QC flags (most severe first)"] != "none" or r["outliers within the age band"] != "none"
    )
    ages = volumes["age"].dropna()
    age_text = f"; ages {ages.min():g}–{ages.max():g} years" if len(ages) else "; ages unknown"
    n_scans, n_subjects = len(volumes), volumes["participant_id"].nunique()
    summary = (
        f"{n_scans} scan{'s' * (n_scans != 1)} of {n_subjects} participant{'s' * (n_subjects != 1)}{age_text}; "
        f"{n_flagged} with at least one QC flag or outlier."
    )
    counts = Counter(f["flag"] for scan in flags for f in scan)
    kinds = ", ".join(f"{kind} in {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>brainparc group report</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>brainparc group report</h1>{banner}<p>{html.escape(summary)}</p><h2>QC</h2>"
        + (f"<p>Flags (scans): {html.escape(kinds)}. Scans are listed most severe first.</p>" if kinds else "")
        + html_table([r for _, r in rows], cols, raw=set(cols))
        + f"<h2>Figures</h2>{imgs}</body></html>\n"
    )
