"""Accuracy, hemisphere, speed and memory of brainparc and its peers on the held-out cases, side by side in one run.

Every system runs as its own subprocess per case (wall time around the subprocess, peak RSS from its own
``getrusage``), on cases that training never read, and is scored the same way from its FreeSurfer-id output:

``mb13``–``mb15``   Mindboggle OASIS-TRT atlases 13–15 (skull-stripped T1w): mean Dice over the 31 DKT cortical regions
                    (DK merged to DKT31: bankssts → superior temporal, frontal pole → superior frontal, temporal pole →
                    inferior temporal; both hemispheres, 62 labels) and over 16 aseg deep grey structures; the
                    cortical ribbon's Dice and the parcel agreement inside both ribbons (:func:`ribbon_agreement`)
``sub005``          BrainParc sub005_adult: agreement with the official model's output (mean Dice over the 106 labels,
                    and over CSF/GM/WM)
``mne``             MNE sample whole head (3 mm): FreeSurfer aseg deep grey mean Dice, brain-mask Dice vs brain.mgz
``brainchop``       brainchop's whole head: no labels; a picture, the left/right check and volumes
``as001``, ``as002``   AutoStrip pseudo-brains of two infants: brain-mask Dice vs the AutoStrip references
``mb12``            dev case, only when named in ``--cases``: Mindboggle 12, the training run's validation subject
                    (the network never trained on it, but the atlas includes it), scored like ``mb13``; for choosing a
                    checkpoint without touching the held-out cases

Systems (``--systems``, comma-separated; default all):

``atlas``      ``brainparc parcellate --model atlas`` (the warped atlas prior only)
``default``    ``brainparc parcellate`` with ``--model`` (default: the bundled default models)
``peer``       brainchop MeshNet "Aparc+Aseg 104" (``benchmarks/peers/brainchop.py``; parcellation cases)
``mindgrab``, ``model11``   brainchop's skull-strip models (mask cases only)
``deepbet``    deepbet from PyPI in its own venv ``work/deepbet-venv`` (``peers/deepbet_peer.py``; mask cases)

The peers read ``../shared/data/anchors/brainchop`` in place (MIT, benchmark only) and are skipped with a note when it
is absent; deepbet is skipped the same way without its venv.  Every parcellation also gets a hemisphere check
(centroid of the left labels left of the right ones, in RAS) and volumes.  Writes ``OUT/<system>/<case>/`` (the
outputs), ``OUT/per_structure.tsv``, ``OUT/results.json``, ``OUT/summary.md`` (one table per metric, systems as
columns) and ``OUT/brainchop_side_by_side.png``; prints the summary.  Not collected by pytest.

    python benchmarks/evaluate.py --out work/eval                                    # all systems, all cases
    python benchmarks/evaluate.py --systems peer,mindgrab,model11 --out work/eval    # the peers only
    python benchmarks/evaluate.py --systems default --model W.safetensors --cases mb13 sub005
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainparc import labels

BENCH = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("BRAINPARC_SHARED_DATA", BENCH.parents[1] / "shared" / "data"))
DKT_MERGE = {1001: 1030, 1032: 1028, 1033: 1009}  # bankssts, frontal pole, temporal pole (and 2xxx)
DEEP_GREY = (10, 11, 12, 13, 17, 18, 26, 28, 49, 50, 51, 52, 53, 54, 58, 60)
LEFT_ASEG = (2, 4, 5, 7, 8, 10, 11, 12, 13, 17, 18, 26, 28, 30, 31)
RIGHT_ASEG = (41, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60, 62, 63)
TARGETS = {"dkt31": 0.78, "aseg": 0.82, "dk106": 0.75, "tissue": 0.88, "mask": 0.95}
SYSTEMS = ("atlas", "default", "peer", "mindgrab", "model11", "deepbet")
PEER_MASKS = {"mindgrab": "mindgrab", "model11": "model11_gw_ae"}
DEEPBET_PYTHON = BENCH.parent / "work" / "deepbet-venv" / "bin" / "python"
WRAPPER = (  # runs ``main(argv)`` of a module and reports its exit code and peak RSS on the last stderr line
    "import json, resource, sys\n"
    "sys.path.insert(0, {bench!r})\n"
    "from {module} import main\n"
    "rc = main(sys.argv[1:])\n"
    "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "print(json.dumps({{'rc': rc, 'peak_rss_mb': rss}}), file=sys.stderr)\n"
)


def cases(shared: Path) -> dict[str, dict]:
    """Case name → input, skull-strip mode and references."""
    mb = {
        f"mb{n}": {
            "input": shared / "mindboggle" / f"atlas_{n}" / "t1weighted_brain.nii.gz",
            "labels": shared / "mindboggle" / f"atlas_{n}" / f"atlas_{n}_labels.nii.gz",
            "kind": "mindboggle",
        }
        for n in (12, 13, 14, 15)
    }
    mb["mb12"]["dev"] = True
    sub5 = shared / "brainparc" / "sub005_adult"
    auto = shared / "brainparc" / "autostrip"
    mne = shared / "whole_head" / "mne_sample"
    return mb | {
        "sub005": {"input": sub5 / "brain.nii.gz", "dk": sub5 / "dk-struct.nii.gz", "tissue": sub5 / "tissue.nii.gz"},
        "mne": {"input": mne / "T1.mgz", "mask": mne / "brain.mgz", "aseg": mne / "aseg.mgz"},
        "brainchop": {"input": shared / "whole_head" / "brainchop" / "t1_crop.nii.gz"},
        "as001": {"input": auto / "sub001_infant_infantile" / "pseudo_brain.nii.gz", "strip": "force", "parc": False,
                  "mask": auto / "sub001_infant_infantile" / "skull_strip.nii.gz"},
        "as002": {"input": auto / "sub002_infant_isointense" / "pseudo_brain.nii.gz", "strip": "force", "parc": False,
                  "mask": auto / "sub002_infant_isointense" / "skull_strip.nii.gz"},
    }  # fmt: skip


def runs_on(system: str, case: dict) -> bool:
    """Whether a system runs on a case: brainparc everywhere, the peer on parcellation cases, mask peers on masks."""
    if system in PEER_MASKS or system == "deepbet":
        return "mask" in case
    if system == "peer":
        return case.get("parc", True)
    return True


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


def command(system: str, case: dict, out: Path, models: list[str], nthreads: int, device: str) -> list[str]:
    """The subprocess argv of one system on one case."""
    if system in ("atlas", "default"):
        argv = ["parcellate", str(case["input"]), "-o", str(out), "--nthreads", str(nthreads), "--device", device]
        argv += [a for m in (["atlas"] if system == "atlas" else models) for a in ("--model", m)]
        argv += ["--skull-strip", case.get("strip", "auto")]
        module = "brainparc.cli.main"
    elif system == "deepbet":
        argv = [str(case["input"]), "-o", str(out), "--nthreads", str(nthreads)]
        return [str(DEEPBET_PYTHON), "-c", WRAPPER.format(bench=str(BENCH), module="peers.deepbet_peer"), *argv]
    else:
        argv = ["parcellate" if system == "peer" else "mask", str(case["input"]), "-o", str(out)]
        argv += ["--nthreads", str(nthreads)] + (["--model", PEER_MASKS[system]] if system in PEER_MASKS else [])
        module = "peers.brainchop"
    return [sys.executable, "-c", WRAPPER.format(bench=str(BENCH), module=module), *argv]


def run_case(system: str, case: dict, out: Path, models: list[str], nthreads: int, device: str) -> dict:
    """One system on one case in a subprocess; returns its provenance plus wall time and peak RSS."""
    t = time.perf_counter()
    done = subprocess.run(command(system, case, out, models, nthreads, device), capture_output=True, text=True,
                          check=False)  # fmt: skip
    wall = time.perf_counter() - t
    tail = done.stderr.strip().splitlines()
    run = json.loads(tail[-1]) if tail and tail[-1].startswith("{") else {"rc": done.returncode}
    run["wall_s"] = wall
    if run.get("rc") != 0:
        run["error"] = "\n".join(tail[-5:]) or f"exit code {done.returncode}"
        return run
    return run | provenance(out)


def provenance(case_dir: Path) -> dict:
    """Stage timings and skull-strip method from a finished case's ``provenance.json``."""
    prov = json.loads((case_dir / "provenance.json").read_text())
    strip = prov.get("skull_strip", {})
    return {"timings_s": prov.get("timings_s", {}), "strip_method": strip.get("method") if isinstance(strip, dict)
            else None}  # fmt: skip


def hemispheres(fs: np.ndarray, affine: np.ndarray) -> dict:
    """RAS x of the left and right label centroids (FreeSurfer ids); swap if left ≥ right."""
    xs = {}
    for side, ctx, aseg in (("left", 1000, LEFT_ASEG), ("right", 2000, RIGHT_ASEG)):
        ijk = np.argwhere(((fs >= ctx) & (fs < ctx + 1000)) | np.isin(fs, aseg))
        xs[side] = float((affine @ np.r_[ijk.mean(0), 1])[0]) if len(ijk) else float("nan")
    return {"left_x": xs["left"], "right_x": xs["right"], "swap": not xs["left"] < xs["right"]}


def volumes(fs: np.ndarray, voxel_mm3: float) -> dict:
    """cm³ of the cortex and cerebral white matter per hemisphere and of the deep grey, and the number of labels."""
    cm3 = voxel_mm3 / 1000
    return {
        "cortex_l_cm3": float(((fs >= 1000) & (fs < 2000)).sum() * cm3),
        "cortex_r_cm3": float(((fs >= 2000) & (fs < 3000)).sum() * cm3),
        "wm_l_cm3": float((fs == 2).sum() * cm3),
        "wm_r_cm3": float((fs == 41).sum() * cm3),
        "deep_grey_cm3": float(np.isin(fs, DEEP_GREY).sum() * cm3),
        "n_labels": int(len(np.unique(fs)) - 1),
    }


def ribbon_agreement(ours: np.ndarray, ref: np.ndarray, cortex_ids: list[int]) -> dict:
    """Where a DKT31 gap comes from: the cortical ribbon (any of ``cortex_ids``) as one mask, and the share of the
    voxels inside both ribbons that carry the same parcel (a right ribbon with misplaced parcel borders scores high
    on the first and low on the second)."""
    ours_ribbon, ref_ribbon = np.isin(ours, cortex_ids), np.isin(ref, cortex_ids)
    both = ours_ribbon & ref_ribbon
    same = float((ours[both] == ref[both]).mean()) if both.any() else float("nan")
    return {"ribbon": dice(ours_ribbon, ref_ribbon), "parcel_in_ribbon": same}


def score(name: str, case: dict, d: Path) -> tuple[dict, list[dict]]:
    """Summary metrics and per-structure rows of one finished run (any system: read from FreeSurfer ids)."""
    summary: dict = {}
    rows: list[dict] = []
    table = labels.dk_struct()
    names = {lab.freesurfer_id: lab.abbreviation for lab in table.labels}
    if (d / "aparcaseg_dseg.nii.gz").exists():
        fs_img = nib.load(str(d / "aparcaseg_dseg.nii.gz"))
        fs = np.rint(np.asarray(fs_img.dataobj)).astype(np.int32).reshape(fs_img.shape[:3])
        summary |= hemispheres(fs, fs_img.affine) | volumes(fs, float(np.prod(fs_img.header.get_zooms()[:3])))
        groups: list[tuple[str, list[int], np.ndarray, np.ndarray]] = []
        if "labels" in case:  # Mindboggle: DKT31 cortex + deep grey
            ours = fs.copy()
            for src, dst in DKT_MERGE.items():
                for h in (0, 1000):
                    ours[ours == src + h] = dst + h
            ref = _labels(case["labels"])
            cortex_ids = [int(v) for v in np.unique(ref) if 1000 < v < 3000]
            groups += [("dkt31", cortex_ids, ours, ref), ("aseg", list(DEEP_GREY), ours, ref)]
            summary |= ribbon_agreement(ours, ref, cortex_ids)
        if "aseg" in case:  # FreeSurfer aseg: deep grey
            groups += [("aseg", list(DEEP_GREY), fs, _labels(case["aseg"], fs_img))]
        for group, ids, ours, ref in groups:
            scores = [dice(ours == i, ref == i) for i in ids]
            summary[group] = float(np.nanmean(scores))
            rows += [{"case": name, "group": group, "label": names.get(i, str(i)), "dice": s}
                     for i, s in zip(ids, scores, strict=True)]  # fmt: skip
        if "dk" in case:  # agreement with the official model, on its 106 BrainParc indices
            ours = table.from_freesurfer(fs)
            ref = _labels(case["dk"], fs_img)
            scores = [dice(ours == i, ref == i) for i in range(1, len(table))]
            summary["dk106"] = float(np.nanmean(scores))
            rows += [{"case": name, "group": "dk106", "label": table[i].abbreviation, "dice": s}
                     for i, s in zip(range(1, len(table)), scores, strict=True)]  # fmt: skip
            tissue_path = d / "tissue_dseg.nii.gz"
            t_ours = _labels(tissue_path, fs_img) if tissue_path.exists() else table.to_tissue(ours)
            t_ref = _labels(case["tissue"], fs_img)
            t_scores = [dice(t_ours == i, t_ref == i) for i in (1, 2, 3)]
            summary["tissue"] = float(np.mean(t_scores))
            rows += [{"case": name, "group": "tissue", "label": t, "dice": s}
                     for t, s in zip(("CSF", "GM", "WM"), t_scores, strict=True)]  # fmt: skip
    if (d / "brain_mask.nii.gz").exists():
        mask_img = nib.load(str(d / "brain_mask.nii.gz"))
        mask = np.asarray(mask_img.dataobj).reshape(mask_img.shape[:3]) > 0
        summary["mask_litres"] = float(mask.sum() * np.prod(mask_img.header.get_zooms()[:3]) / 1e6)
        if "mask" in case:
            summary["mask"] = dice(mask, _labels(case["mask"], mask_img, order=1) > 0)
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default: ../shared/data)")
    p.add_argument("--out", type=Path, default=Path("work/eval"), help="output folder (default: work/eval)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--model", action="append", default=None, help="weights of the 'default' system (repeat for both)")
    p.add_argument("--cases", nargs="+", default=None, help="subset of the cases (default: all)")
    p.add_argument("--nthreads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--score-only",
        action="store_true",
        help="score existing outputs in --out (no runs; wall time and RSS from an earlier results.json when there)",
    )
    a = p.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    if unknown := set(systems) - set(SYSTEMS):
        p.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")
    all_cases = cases(a.shared)
    chosen = a.cases or [n for n, c in all_cases.items() if not c.get("dev")]
    a.out.mkdir(parents=True, exist_ok=True)
    anchors = a.shared / "anchors" / "brainchop"
    sys.path.insert(0, str(BENCH))
    from peers import brainchop

    notes: list[str] = []
    if any(s in ("peer", *PEER_MASKS) for s in systems) and not brainchop.available(anchors):
        notes.append(f"brainchop peers skipped: models not found under {anchors}")
        systems = [s for s in systems if s in ("atlas", "default", "deepbet")]
    if "deepbet" in systems and not DEEPBET_PYTHON.exists():
        notes.append(f"deepbet skipped: no venv at {DEEPBET_PYTHON.parents[1]} (see benchmarks/peers/deepbet_peer.py)")
        systems.remove("deepbet")
    earlier = _earlier(a.out / "results.json") if a.score_only else {}
    results: dict[str, dict[str, dict]] = {s: {} for s in systems}
    rows: list[dict] = []
    for name in chosen:
        for system in systems:
            case, d = all_cases[name], a.out / system / name
            if not runs_on(system, case):
                continue
            if a.score_only:
                if not (d / "provenance.json").exists():
                    continue
                prior = earlier.get(system, {}).get(name, {})
                run = {k: prior[k] for k in ("wall_s", "peak_rss_mb") if k in prior} | provenance(d)
            else:
                run = run_case(system, case, d, a.model or ["default"], a.nthreads, a.device)
            if run.get("error"):
                results[system][name] = run
                print(f"{system} {name}: FAILED\n{run['error']}", file=sys.stderr)
                continue
            summary, case_rows = score(name, case, d)
            results[system][name] = run | summary
            rows += [{"system": system} | r for r in case_rows]
            print(json.dumps({system: {name: results[system][name]}}), file=sys.stderr)
    with (a.out / "per_structure.tsv").open("w", encoding="utf-8") as fh:
        fh.write("system\tcase\tgroup\tlabel\tdice\n")
        fh.writelines(f"{r['system']}\t{r['case']}\t{r['group']}\t{r['label']}\t{r['dice']:.4f}\n" for r in rows)
    if not a.score_only:  # systems run earlier into the same folder keep their entries
        results = {**_earlier(a.out / "results.json"), **results}
    (a.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if "brainchop" in chosen:
        figure = side_by_side(all_cases["brainchop"]["input"], a.out, systems, a.out / "brainchop_side_by_side.png")
        if figure:
            notes.append(f"figure: {figure.name} (brainchop head, same slices, FreeSurfer colours)")
    text = summary_tables(results, notes, a.nthreads)
    (a.out / "summary.md").write_text(text)
    print(text)
    return 1 if any(r.get("error") for res in results.values() for r in res.values()) else 0


def _earlier(path: Path) -> dict:
    """An earlier ``results.json`` (system → case → run), or nothing."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if all(isinstance(v, dict) for v in data.values()) else {}


def _cell(r: dict | None, key: str, fmt: str) -> str:
    """One table cell: the value, ``failed``, or empty when the system did not run or has no such metric."""
    if r is None:
        return ""
    if r.get("error"):
        return "failed"
    v = r.get(key)
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def summary_tables(results: dict[str, dict[str, dict]], notes: list[str], nthreads: int) -> str:
    """Markdown: one table per metric (cases × systems), with the target in the heading, then means, L/R, volumes,
    time and memory."""
    systems = list(results)
    case_names = list(dict.fromkeys(c for res in results.values() for c in res))
    out = [f"# brainparc evaluation, side by side ({nthreads} thread(s) per run)\n\n"]
    out += [f"- {n}\n" for n in notes]
    metrics = [
        ("dkt31", "Mindboggle DKT31 cortex, mean Dice over 62 regions", ".3f"),
        ("ribbon", "Mindboggle cortical ribbon (any DKT31 label), Dice", ".3f"),
        ("parcel_in_ribbon", "Mindboggle, same DKT31 parcel inside both ribbons, share of voxels", ".3f"),
        ("aseg", "aseg deep grey, mean Dice over 16 structures", ".3f"),
        ("dk106", "sub005, 106-label mean Dice vs the official output", ".3f"),
        ("tissue", "sub005, tissue (CSF/GM/WM) mean Dice", ".3f"),
        ("mask", "brain-mask Dice vs the reference", ".3f"),
        ("mask_litres", "brain mask, litres", ".2f"),
        ("wall_s", "wall time per case, s (subprocess, imports included)", ".0f"),
        ("peak_rss_mb", "peak RSS per case, MB", ".0f"),
    ]
    head = "| case | " + " | ".join(systems) + " |\n" + "|---" * (len(systems) + 1) + "|\n"
    for key, title, fmt in metrics:
        present = [c for c in case_names if any(key in results[s].get(c, {}) for s in systems)]
        if not present:
            continue
        target = f" (target ≥ {TARGETS[key]})" if key in TARGETS else ""
        out.append(f"\n## {key}: {title}{target}\n\n{head}")
        out += [f"| {c} | " + " | ".join(_cell(results[s].get(c), key, fmt) for s in systems) + " |\n" for c in present]
        if key in TARGETS:
            means = [[r[key] for r in results[s].values() if key in r and not np.isnan(r[key])] for s in systems]
            out.append("| **mean** | " + " | ".join(f"**{np.mean(m):.3f}** ({len(m)})" if m else "" for m in means))
            out.append(" |\n")
    out.append(f"\n## left/right (centroid RAS x of the left labels < the right ones)\n\n{head}")
    for c in case_names:
        cells = []
        for s in systems:
            r = results[s].get(c)
            cells.append("" if r is None or "swap" not in r else f"{'SWAP' if r['swap'] else 'ok'} "
                         f"({r['left_x']:.0f}/{r['right_x']:.0f})")  # fmt: skip
        if any(cells):
            out.append(f"| {c} | " + " | ".join(cells) + " |\n")
    vol_keys = ("cortex_l_cm3", "cortex_r_cm3", "wm_l_cm3", "wm_r_cm3", "deep_grey_cm3", "n_labels")
    out.append("\n## volumes, cm³ (cortex L/R, cerebral WM L/R, deep grey; labels present)\n\n")
    out.append("| case | system | " + " | ".join(vol_keys) + " |\n" + "|---" * (len(vol_keys) + 2) + "|\n")
    for c in case_names:
        for s in systems:
            r = results[s].get(c)
            if r and "n_labels" in r:
                out.append(f"| {c} | {s} | " + " | ".join(f"{r[k]:.0f}" for k in vol_keys) + " |\n")
    return "".join(out) + "\n"


def _canonical(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The image's data in RAS+ voxel order."""
    return np.asarray(nib.as_closest_canonical(img).dataobj)


def side_by_side(t1: Path, out: Path, systems: list[str], png: Path) -> Path | None:
    """One PNG: every parcellating system's labels over the brainchop head, same axial and coronal slices, FreeSurfer
    colours (from brainparc's label table and brainchop's colormap); ``None`` when no system parcellated it."""
    found = [(s, out / s / "brainchop" / "aparcaseg_dseg.nii.gz") for s in systems]
    found = [(s, p) for s, p in found if p.exists()]
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    sys.path.insert(0, str(BENCH))
    from peers import brainchop

    colours = {0: (0.0, 0.0, 0.0)}
    cmap_json = SHARED / "anchors" / "brainchop" / brainchop.PARC_MODEL / "colormap.json"
    if cmap_json.exists():
        cm = json.loads(cmap_json.read_text())
        ids = brainchop.freesurfer_ids(cm["labels"])
        colours |= {int(i): (r / 255, g / 255, b / 255) for i, r, g, b in zip(ids, cm["R"], cm["G"], cm["B"],
                                                                               strict=True)}  # fmt: skip
    colours |= {lab.freesurfer_id: matplotlib.colors.to_rgb(lab.color) for lab in labels.dk_struct().labels}
    image = _canonical(nib.load(str(t1))).astype(np.float32)
    maps = [_canonical(nib.load(str(p))).astype(np.int32) for _, p in found]
    lut = np.zeros(max(max(colours), max(int(m.max()) for m in maps)) + 1, dtype=np.int32)
    keys = sorted(colours)
    lut[keys] = np.arange(len(keys))
    cmap = ListedColormap([colours[k] for k in keys])
    brain = np.any([m > 0 for m in maps], axis=0)
    centre = np.argwhere(brain).mean(0).astype(int) if brain.any() else np.array(image.shape) // 2
    views = [("axial", lambda v: v[:, :, centre[2]].T), ("coronal", lambda v: v[:, centre[1], :].T)]
    vmax = float(np.percentile(image, 99.5))
    fig, axes = plt.subplots(len(views), len(found), figsize=(4 * len(found), 4 * len(views)), squeeze=False)
    for col, ((system, _), labmap) in enumerate(zip(found, maps, strict=True)):
        idx = np.ma.masked_equal(lut[labmap], 0)
        for row, (view, cut) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(cut(image), cmap="gray", vmin=0, vmax=vmax, origin="lower")
            ax.imshow(cut(idx), cmap=cmap, vmin=0, vmax=len(keys) - 1, origin="lower", alpha=0.6,
                      interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.02, 0.5, "L", color="w", transform=ax.transAxes, fontsize=12)
            ax.text(0.95, 0.5, "R", color="w", transform=ax.transAxes, fontsize=12)
            ax.set_title(f"{system} — {view}" if row == 0 else view)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


if __name__ == "__main__":
    sys.exit(main())
