"""Group level: ``group/volumes.tsv``, ``group/qc.tsv`` and ``group/report.html``, from OUTPUT_DIR only."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainparc.reports.figures import plot_distributions, plot_vs_age
from brainparc.reports.participant import read_volumes
from brainparc.reports.qc import BRAIN, ICV, TOTALS, Z_OUTLIER, bands_for, participant_flags, robust_z

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


def qc_table(volumes: pd.DataFrame, regions: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Robust z-scores of ICV-normalised regional volumes within age bands, plus per-scan flags.

    Returns ``(qc, outliers)``: one QC row per scan, and a boolean frame (scan × region) of outliers.
    """
    ages = [None if np.isnan(a) else a for a in volumes["age"]]
    bands = pd.Series(bands_for(ages), index=volumes.index)
    rel = volumes[list(regions)].div(volumes[ICV].replace(0, np.nan), axis=0)
    z = pd.DataFrame(0.0, index=volumes.index, columns=list(regions))
    for band in bands.unique():
        members = bands == band
        for col in regions:
            z.loc[members, col] = robust_z(rel.loc[members, col].to_numpy())
    icv_z = pd.Series(0.0, index=volumes.index)
    for band in bands.unique():
        members = bands == band
        icv_z[members] = robust_z(volumes.loc[members, ICV].to_numpy())
    outliers = z.abs() > Z_OUTLIER
    qc = volumes[["participant_id", "session_id", "acquisition", "run", "age"]].copy()
    qc["age_band"] = bands
    qc["icv_robust_z"] = icv_z.round(2)
    qc["n_outlier_regions"] = outliers.sum(axis=1)
    qc["outlier_regions"] = [", ".join(c for c in regions if outliers.loc[i, c]) or "n/a" for i in volumes.index]
    flags = [participant_flags({c: volumes.loc[i, c] for c in (*regions, *TOTALS)}) for i in volumes.index]
    qc["flags"] = ["; ".join(f"{f['flag']}: {f['detail']}" for f in fl) or "n/a" for fl in flags]
    return qc, outliers


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
    figs = [
        plot_distributions(
            volumes,
            regions,
            outliers,
            group / "figures" / "regional_volumes.png",
            "Regional volumes (outliers: x)",
            labels,
        )
    ]
    tot_out = pd.DataFrame({c: np.abs(robust_z(volumes[c].to_numpy())) > Z_OUTLIER for c in TOTALS})
    figs.append(
        plot_distributions(volumes, list(TOTALS), tot_out, group / "figures" / "total_volumes.png", "Totals", labels)
    )
    if volumes["age"].notna().sum() >= 2:
        ok = volumes["age"].notna()
        series = {c: volumes.loc[ok, c] for c in (ICV, BRAIN, "Tissue GM", "Tissue WM")}
        figs.append(plot_vs_age(volumes.loc[ok, "age"].to_numpy(), series, group / "figures" / "volumes_vs_age.png"))
    paths["report"] = write_atomic(group / "report.html", _html(volumes, qc, figs, group))
    return paths


def _html(volumes: pd.DataFrame, qc: pd.DataFrame, figs: list[Path], group: Path) -> str:
    imgs = "".join(f"<img src='{os.path.relpath(p, group)}' style='max-width:100%'><br>" for p in figs)
    links = "".join(
        f"<li><a href='../{html.escape(r)}'>{html.escape(p)} {html.escape(s)}</a></li>"
        for p, s, r in zip(volumes["participant_id"], volumes["session_id"], volumes["report"], strict=True)
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>brainparc group report</title></head><body>"
        f"<h1>brainparc group report</h1><p>{len(volumes)} scans.</p><h2>Figures</h2>{imgs}"
        f"<h2>QC</h2>{qc.to_html(index=False, na_rep='n/a')}"
        f"<h2>Participant reports</h2><ul>{links}</ul></body></html>\n"
    )
