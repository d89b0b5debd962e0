"""Accuracy, hemisphere, speed and memory of ``brainparc parcellate`` on the held-out cases (issue 6 targets).

Runs the real command (one subprocess per case: its own peak RSS) on cases that training never read, then scores:

``mb13``–``mb15``   Mindboggle OASIS-TRT atlases 13–15 (skull-stripped T1w): mean Dice over the 31 DKT cortical regions
                    (our DK merged to DKT31: bankssts → superior temporal, frontal pole → superior frontal, temporal
                    pole → inferior temporal; both hemispheres, 62 labels) and over 16 aseg deep grey structures
``sub005``          BrainParc sub005_adult: agreement with the reference model (mean Dice over the 106 labels, and
                    over CSF/GM/WM)
``mne``, ``brainchop``, ``as001``, ``as002``   skull stripping on whole heads / AutoStrip pseudo-brains: brain-mask Dice
                    against FreeSurfer's brain.mgz (MNE sample) and the AutoStrip reference masks; brainchop has no
                    reference (checked for failure and a plausible volume only)

Every case also gets a hemisphere check (centroid of the left labels left of the right ones, in RAS) and the stage
timings of ``provenance.json``.  Writes ``OUT/<case>/`` (the outputs), ``OUT/per_structure.tsv`` and
``OUT/summary.md``; prints the summary.  Not collected by pytest.

    python benchmarks/evaluate.py --out work/eval                    # bundled default models
    python benchmarks/evaluate.py --model W.safetensors --model S.safetensors --cases mb13 sub005
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from brainparc import labels

SHARED = Path(os.environ.get("BRAINPARC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DKT_MERGE = {1001: 1030, 1032: 1028, 1033: 1009}  # bankssts, frontal pole, temporal pole (and 2xxx)
DEEP_GREY = (10, 11, 12, 13, 17, 18, 26, 28, 49, 50, 51, 52, 53, 54, 58, 60)
TARGETS = {"dkt31": 0.75, "aseg": 0.80, "dk106": 0.75, "tissue": 0.85, "mask": 0.95}


def cases(shared: Path) -> dict[str, dict]:
    """Case name → input, skull-strip mode and references."""
    mb = {
        f"mb{n}": {
            "input": shared / "mindboggle" / f"atlas_{n}" / "t1weighted_brain.nii.gz",
            "labels": shared / "mindboggle" / f"atlas_{n}" / f"atlas_{n}_labels.nii.gz",
            "kind": "mindboggle",
        }
        for n in (13, 14, 15)
    }
    sub5 = shared / "brainparc" / "sub005_adult"
    auto = shared / "brainparc" / "autostrip"
    mne = shared / "whole_head" / "mne_sample"
    return mb | {
        "sub005": {"input": sub5 / "brain.nii.gz", "dk": sub5 / "dk-struct.nii.gz", "tissue": sub5 / "tissue.nii.gz"},
        "mne": {"input": mne / "T1.mgz", "mask": mne / "brain.mgz"},
        "brainchop": {"input": shared / "whole_head" / "brainchop" / "t1_crop.nii.gz"},
        "as001": {"input": auto / "sub001_infant_infantile" / "pseudo_brain.nii.gz", "strip": "force",
                  "mask": auto / "sub001_infant_infantile" / "skull_strip.nii.gz"},
        "as002": {"input": auto / "sub002_infant_isointense" / "pseudo_brain.nii.gz", "strip": "force",
                  "mask": auto / "sub002_infant_isointense" / "skull_strip.nii.gz"},
    }  # fmt: skip


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean arrays (nan when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return float("nan") if s == 0 else 2.0 * int((a & b).sum()) / s


def _labels(path: Path, like: nib.spatialimages.SpatialImage | None = None, order: int = 0) -> np.ndarray:
    """Integer array of ``path``, resampled onto ``like``'s grid when given (reference masks on another grid)."""
    img = nib.load(str(path))
    if like is not None and (img.shape[:3] != like.shape[:3] or not np.allclose(img.affine, like.affine, atol=1e-3)):
        from nibabel.processing import resample_from_to

        src = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
        img = resample_from_to(src, (like.shape[:3], like.affine), order=order)
        if order > 0:
            return (np.asarray(img.dataobj) > 0.5).astype(np.int32)
    return np.rint(np.asarray(img.dataobj)).astype(np.int32).reshape(img.shape[:3])


def run_case(name: str, case: dict, out: Path, models: list[str], nthreads: int, device: str) -> dict:
    """``brainparc parcellate`` on one case in a subprocess; returns its provenance plus wall time and peak RSS."""
    argv = ["parcellate", str(case["input"]), "-o", str(out / name), "--nthreads", str(nthreads), "--device", device]
    argv += [a for m in models for a in ("--model", m)] + ["--skull-strip", case.get("strip", "auto")]
    code = (
        "import json, resource, sys, time\n"
        "from brainparc.cli.main import main\n"
        "t = time.perf_counter(); rc = main(sys.argv[1:]); wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_mb': rss}), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False)
    tail = done.stderr.strip().splitlines()
    run = json.loads(tail[-1]) if tail and tail[-1].startswith("{") else {"rc": done.returncode}
    if run.get("rc") != 0:
        run["error"] = "\n".join(tail[-5:])
        return run
    return run | provenance(out / name)


def provenance(case_dir: Path) -> dict:
    """Stage timings and skull-strip method from a finished case's ``provenance.json``."""
    prov = json.loads((case_dir / "provenance.json").read_text())
    return {"timings_s": prov.get("timings_s", {}), "strip_method": prov.get("skull_strip", {}).get("method")}


def hemispheres(dseg: nib.spatialimages.SpatialImage) -> dict:
    """RAS x of the left (odd BrainParc index 1–95) and right (even 2–96) label centroids; swap if left ≥ right."""
    lab = np.asarray(dseg.dataobj).astype(np.int32)
    xs = {}
    for side, values in (("left", range(1, 97, 2)), ("right", range(2, 97, 2))):
        ijk = np.argwhere(np.isin(lab, list(values)))
        xs[side] = float((dseg.affine @ np.r_[ijk.mean(0), 1])[0]) if len(ijk) else float("nan")
    return {"left_x": xs["left"], "right_x": xs["right"], "swap": not xs["left"] < xs["right"]}


def score(name: str, case: dict, out: Path) -> tuple[dict, list[dict]]:
    """Summary metrics and per-structure rows of one finished case."""
    d = out / name
    dseg = nib.load(str(d / "brainparc_dseg.nii.gz"))
    summary: dict = hemispheres(dseg)
    rows: list[dict] = []
    mask = np.asarray(nib.load(str(d / "brain_mask.nii.gz")).dataobj) > 0
    summary["mask_litres"] = float(mask.sum() * np.prod(dseg.header.get_zooms()[:3]) / 1e6)
    if "labels" in case:  # Mindboggle
        ours = np.asarray(nib.load(str(d / "aparcaseg_dseg.nii.gz")).dataobj).astype(np.int32)
        for src, dst in DKT_MERGE.items():
            for h in (0, 1000):
                ours[ours == src + h] = dst + h
        ref = _labels(case["labels"])
        names = {lab.freesurfer_id: lab.abbreviation for lab in labels.dk_struct().labels}
        cortex = [int(v) for v in np.unique(ref) if 1000 < v < 3000]
        for group, ids in (("dkt31", cortex), ("aseg", DEEP_GREY)):
            scores = [dice(ours == i, ref == i) for i in ids]
            summary[group] = float(np.nanmean(scores))
            rows += [
                {"case": name, "group": group, "label": names.get(i, str(i)), "dice": s}
                for i, s in zip(ids, scores, strict=True)
            ]
    if "dk" in case:  # reference-model agreement
        ours = np.asarray(dseg.dataobj).astype(np.int32)
        ref = _labels(case["dk"])
        names = {lab.index: lab.abbreviation for lab in labels.dk_struct().labels}
        scores = [dice(ours == i, ref == i) for i in range(1, 107)]
        summary["dk106"] = float(np.nanmean(scores))
        rows += [
            {"case": name, "group": "dk106", "label": names[i], "dice": s}
            for i, s in zip(range(1, 107), scores, strict=True)
        ]
        t_ours = np.asarray(nib.load(str(d / "tissue_dseg.nii.gz")).dataobj).astype(np.int32)
        t_ref = _labels(case["tissue"])
        t_scores = [dice(t_ours == i, t_ref == i) for i in (1, 2, 3)]
        summary["tissue"] = float(np.mean(t_scores))
        rows += [
            {"case": name, "group": "tissue", "label": t, "dice": s}
            for t, s in zip(("CSF", "GM", "WM"), t_scores, strict=True)
        ]
    if "mask" in case:
        mask_img = nib.load(str(d / "brain_mask.nii.gz"))
        summary["mask"] = dice(mask, _labels(case["mask"], mask_img, order=1) > 0)
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default: ../shared/data)")
    p.add_argument("--out", type=Path, default=Path("work/eval"), help="output folder (default: work/eval)")
    p.add_argument("--model", action="append", default=None, help="weights (repeat for both; default: default)")
    p.add_argument("--cases", nargs="+", default=None, help="subset of the cases (default: all)")
    p.add_argument("--nthreads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--score-only",
        action="store_true",
        help="score existing outputs in --out (no runs; stage timings from their provenance)",
    )
    a = p.parse_args(argv)
    all_cases = cases(a.shared)
    chosen = a.cases or list(all_cases)
    a.out.mkdir(parents=True, exist_ok=True)
    results, rows = {}, []
    for name in chosen:
        if a.score_only:  # wall time and peak RSS exist only for runs made now
            run = provenance(a.out / name)
        else:
            run = run_case(name, all_cases[name], a.out, a.model or ["default"], a.nthreads, a.device)
        if run.get("error"):
            results[name] = run
            print(f"{name}: FAILED\n{run['error']}", file=sys.stderr)
            continue
        summary, case_rows = score(name, all_cases[name], a.out)
        results[name] = run | summary
        rows += case_rows
        print(json.dumps({name: results[name]}), file=sys.stderr)
    with (a.out / "per_structure.tsv").open("w", encoding="utf-8") as fh:
        fh.write("case\tgroup\tlabel\tdice\n")
        fh.writelines(f"{r['case']}\t{r['group']}\t{r['label']}\t{r['dice']:.4f}\n" for r in rows)
    (a.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = summary_table(results)
    (a.out / "summary.md").write_text(text)
    print(text)
    return 1 if any(r.get("error") for r in results.values()) else 0


def summary_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per case, the target metrics with the target in the header, timings, memory."""
    cols = ["dkt31", "aseg", "dk106", "tissue", "mask"]
    head = "| case | " + " | ".join(f"{c} (≥{TARGETS[c]})" for c in cols)
    head += " | swap | mask L | strip | parcellation s | total s | wall s | peak RSS MB |\n"
    lines = [head, "|" + "---|" * (len(cols) + 8) + "\n"]
    for name, r in results.items():
        if r.get("error"):
            lines.append(f"| {name} | failed: {r['error'].splitlines()[-1][:80]} |\n")
            continue
        t = r.get("timings_s", {})
        vals = " | ".join(f"{r[c]:.3f}" if c in r else "" for c in cols)
        lines.append(
            f"| {name} | {vals} | {'SWAP' if r['swap'] else 'ok'} | {r['mask_litres']:.2f} "
            f"| {r.get('strip_method', '')} "
            f"| {t.get('parcellation', float('nan')):.0f} | {t.get('total', float('nan')):.0f} "
            f"| {r.get('wall_s', float('nan')):.0f} | {r.get('peak_rss_mb', float('nan')):.0f} |\n"
        )
    for c in cols:
        vals = [r[c] for r in results.values() if c in r]
        if vals:
            lines.append(f"\nmean {c}: {np.mean(vals):.3f} over {len(vals)} case(s) (target ≥ {TARGETS[c]})")
    return "".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
