"""Participant and group reports: overlay geometry (orientation, sides, crop), links and images that resolve, and
age-aware outlier marks. Built from small synthetic derivatives, no network or model needed."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainparc import labels
from brainparc.reports.figures import overlay_slices
from tests.bids.skeleton import phantom

SCANS = {  # raw T1w (BIDS path) → age
    "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": 0.5,
    "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz": 1.5,
    "sub-02/anat/sub-02_run-1_T1w.nii.gz": 35.0,
}


def _marked(shape=(40, 44, 36)) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """A RAS phantom (world origin at the centre) and its labels: 1 brain, 2 the left-anterior-superior octant."""
    affine = np.eye(4)
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2
    data = np.asarray(phantom(shape=shape).dataobj)
    img = nib.Nifti1Image(data, affine)
    lab = (data > 0).astype(np.int16)
    x, y, z = (np.arange(n)[:, None, None] for n in shape)  # x small = patient left in RAS
    octant = (x.reshape(-1, 1, 1) < shape[0] // 2) & (y.reshape(1, -1, 1) >= shape[1] // 2)
    lab[octant & (z.reshape(1, 1, -1) >= shape[2] // 2) & (lab > 0)] = 2
    return img, nib.Nifti1Image(lab, affine)


def _reorient(img: nib.Nifti1Image, axcodes: tuple[str, str, str]) -> nib.Nifti1Image:
    """The same image stored in another voxel order (exact index permutation/flip)."""
    from nibabel import orientations as nio

    ornt = nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(axcodes))
    return img.as_reoriented(ornt)


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("A", "S", "L"), ("L", "I", "A")])
def test_overlay_panels_do_not_depend_on_storage_order(axcodes):
    img, lab = _marked()
    ref = overlay_slices(img, lab)
    other = overlay_slices(_reorient(img, axcodes), _reorient(lab, axcodes))
    assert len(ref) == len(other) == 9
    for a, b in zip(ref, other, strict=True):
        assert (a.axis, a.index, a.aspect) == (b.axis, b.index, b.aspect)
        np.testing.assert_array_equal(a.anat, b.anat)
        np.testing.assert_array_equal(a.overlay, b.overlay)
        assert a.world_mm == pytest.approx(b.world_mm)


def test_overlay_sides_and_coordinates():
    img, lab = _marked()
    panels = overlay_slices(img, lab)  # slices at 25, 50 and 75 % of the brain's extent along each axis
    sag, cor, axi = panels[0], panels[5], panels[8]  # left sagittal, anterior coronal, superior axial
    assert sag.world_mm < 0 and cor.world_mm > 0 and axi.world_mm > 0
    assert panels[2].world_mm > 0 and panels[3].world_mm < 0 and panels[6].world_mm < 0

    def extent(panel, axis):
        hit = np.nonzero((panel.overlay == 2).any(axis=axis))[0]
        return hit.min(), hit.max(), panel.overlay.shape[1 - axis]

    for panel in (cor, axi):  # neurological order: patient left on the left of the picture
        lo, hi, n = extent(panel, 0)
        assert hi < n / 2
    lo, hi, n = extent(axi, 1)
    assert hi < n / 2  # anterior at the top of an axial slice
    for panel in (sag, cor):
        lo, hi, n = extent(panel, 1)
        assert hi < n / 2  # superior at the top
    lo, hi, n = extent(sag, 0)
    assert lo >= n / 2 - 1  # anterior on the right: the face looks right


def test_overlay_crops_to_the_brain_in_a_wide_field_of_view():
    img, lab = _marked()
    mask = np.asarray(lab.dataobj) > 0
    pad = 60
    wide = nib.Nifti1Image(np.pad(np.asarray(img.dataobj), pad) + 5.0, img.affine)  # bright "neck" everywhere
    wide_mask = nib.Nifti1Image(np.pad(mask, pad).astype(np.uint8), img.affine)
    extent = [int(np.ptp(np.nonzero(mask.any(axis=tuple(d for d in range(3) if d != a)))[0])) + 1 for a in range(3)]
    for panel in overlay_slices(wide, wide_mask, margin_mm=5):
        i, j = (d for d in range(3) if d != panel.axis)
        assert panel.anat.shape == (extent[j] + 10, extent[i] + 10)


def _derivatives(out: Path) -> Path:
    """Write the derivatives of SCANS (phantom brains, a few labels) and return OUTPUT_DIR."""
    from brainparc.bids.derivatives import init_derivatives, write_derivative
    from brainparc.core.volumes import rows_to_tsv
    from brainparc.pipeline import volume_rows

    dk = labels.dk_struct()
    idx = {name: i for i, name in enumerate(dk.names)}
    bids = out.parent / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    init_derivatives(out, bids)
    tmp = out.parent / "tmp"
    tmp.mkdir()
    for n, (rel, age) in enumerate(SCANS.items()):
        img = phantom(seed=n)
        data = np.asarray(img.dataobj)
        mask = data > 0
        tissue = np.where(data > 90, 3, np.where(mask, 2, 0)).astype(np.int16)
        left = np.zeros(data.shape, bool)
        left[: data.shape[0] // 2] = True
        parc = np.zeros(data.shape, np.int16)
        for side, half in (("Left", left), ("Right", ~left)):
            parc[(tissue == 2) & half] = idx[f"{side} Precentral"]
            parc[(tissue == 3) & half] = idx[f"{side} Cerebral White Matter"]
        files = {
            "preproc": data.astype(np.float32),
            "mask": mask.astype(np.uint8),
            "tissue": tissue,
            "aparcaseg": dk.to_freesurfer(parc).astype(np.int16),
            **{f"probseg_{t}": (tissue == k).astype(np.float32) for k, t in ((1, "CSF"), (2, "GM"), (3, "WM"))},
        }
        source = bids / rel
        for key, arr in files.items():
            path = tmp / f"{n}_{key}.nii.gz"
            nib.save(nib.Nifti1Image(arr, img.affine), path)
            meta = {"Sources": [f"bids:raw:{rel}"]}
            if key == "aparcaseg":
                meta["Provenance"] = {"models": _models("final" if rel.startswith("sub-02") else "preliminary")}
            write_derivative(path, source, out, key, meta)
        vols = tmp / f"{n}_volumes.tsv"
        vols.write_text(rows_to_tsv(volume_rows(parc, tissue, mask, img.header.get_zooms())))
        write_derivative(vols, source, out, "volumes", {"age": age})
    return out


def _models(status: str) -> dict:
    """Provenance ``models`` of a scan: a parcellation model with ``status`` and a final skull-stripping model."""
    parc = {"preset": f"parc-{status}", "source": "file", "sha256": (status[0] * 64), "status": status}
    parc.update(recipe="scripts/train_default_models.sh", note=f"{status} weights: read the model card")
    strip = {"preset": "strip-final", "source": "file", "sha256": "f" * 64, "status": "final", "recipe": "r2"}
    return {"parcellation": parc, "skull_strip": strip}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href"):
                self.links.append((tag, value))


def _links(page: Path) -> list[tuple[str, Path]]:
    parser = _Links()
    parser.feed(page.read_text())
    return [(tag, (page.parent / value).resolve()) for tag, value in parser.links]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from brainparc.reports.group import run_group_level
    from brainparc.reports.participant import write_participant_report

    out = _derivatives(tmp_path_factory.mktemp("reports") / "out")
    pages = [write_participant_report(out, sub, None) for sub in ("01", "02")]
    pages.append(write_participant_report(out, "03", None, "sub-03_T1w.nii.gz: InputError: <not 3-D> & worse"))
    pages.append(run_group_level(out)["report"])
    return pages


def test_every_link_and_image_resolves(reports):
    from PIL import Image

    pages = reports
    for page in pages:
        for tag, target in _links(page):
            assert target.is_file(), f"{page.name}: broken {tag} → {target}"
            if tag == "img":
                with Image.open(target) as png:
                    assert png.format == "PNG" and min(png.size) >= 150, (target, png.size)
    images = {t for page in pages for tag, t in _links(page) if tag == "img"}
    assert len(images) == 3 * len(SCANS) + 3  # three overlays per scan, three group figures
    group = [t for tag, t in _links(pages[-1]) if tag == "a"]
    assert sorted(p.name for p in group) == ["sub-01.html", "sub-01.html", "sub-02.html"]


def test_report_content(reports):
    pages = reports
    sub01 = pages[0].read_text()
    assert sub01.count("<h2>sub-01_ses-") == 2 and "Age: 0.5 years" in sub01 and "Age: 1.5 years" in sub01
    assert re.search(r"intracranial volume 0\.\d{3} L", sub01)
    assert "CSF blue, GM red, WM yellow" in sub01
    assert "4 of the 106 labels present, 2 of the 68 cortical parcels" in sub01
    failed = pages[2].read_text()
    assert "InputError: &lt;not 3-D&gt; &amp; worse" in failed and "No parcellation found" in failed
    group = pages[-1].read_text()
    assert "3 scans of 2 participants; ages 0.5–35 years" in group
    assert group.count("<img ") == 3 and "Lifespan chart" in group


def test_totals_outliers_are_judged_within_age_bands():
    from brainparc.reports.group import qc_table, robust_z
    from brainparc.reports.qc import BRAIN, ICV

    scans = [(0.3, 0.40), (0.5, 0.42), (0.8, 0.45)] + [(30 + i, 1.0 + 0.01 * (i % 3 - 1)) for i in range(7)]
    rows = []
    for i, (age, scale) in enumerate(scans):
        vols = {ICV: 1.4e6 * scale, BRAIN: 1.2e6 * scale, "Tissue CSF": 2e5 * scale, "Tissue GM": 6e5 * scale}
        vols.update({"Tissue WM": 6e5 * scale, "Left X": 1e4 * scale, "Right X": 1e4 * scale})
        ids = {"participant_id": f"sub-{i}", "session_id": "n/a", "acquisition": "n/a", "run": "n/a", "age": age}
        rows.append(ids | vols)
    table = pd.DataFrame(rows)
    assert np.abs(robust_z(table[ICV].to_numpy())[:3]).min() > 3.5  # judged against adults, infants would stand out
    qc, _ = qc_table(table, ["Left X", "Right X"])
    assert (qc["outlier_totals"] == "n/a").all() and (qc["icv_robust_z"].abs() < 3.5).all()
    assert list(qc["age_band"][:4]) == ["0-2y", "0-2y", "0-2y", "18-40y"]


def _banner(page: Path) -> str:
    text = page.read_text()
    start = text.index("<div class='banner")
    return text[start : text.index("</div>", start)]


def test_every_report_opens_with_the_model_banner(reports):
    sub01, sub02, failed, group = reports
    prelim = _banner(sub01)
    assert prelim.startswith("<div class='banner warn'><h2>⚠ Not final weights: parc-preliminary (preliminary)")
    assert "p" * 64 in prelim and "f" * 64 in prelim  # both models, full sha256
    assert "recipe: scripts/train_default_models.sh" in prelim and "preliminary weights: read the model card" in prelim
    final = _banner(sub02)
    assert final.startswith("<div class='banner'><h2>Models</h2>") and "warn" not in final
    assert "status: <b>final</b>" in final
    assert "<div class='banner" not in failed.read_text()  # no parcellation, no model to name
    assert _banner(group).startswith("<div class='banner warn'>") and "parc-final" in _banner(group)
    body = sub01.read_text()
    assert body.index("banner warn") < body.index("<h2>Errors")  # at the top, not a footnote


def test_model_status_fallbacks():
    from brainparc.reports.participant import model_banner, model_status

    assert model_status({"source": "official"}) == "official"
    assert model_status({"source": "file"}) == "not recorded"
    assert "banner warn" in model_banner([{"role": "parcellation", "preset": "mine", "source": "file"}])
    assert "banner warn" not in model_banner([{"role": "parcellation", "preset": "BrainParc", "source": "official"}])


def test_parcellation_legend_and_colours():
    from matplotlib.colors import to_rgb

    from brainparc.reports.figures import legend_groups, parcellation_colors

    dk = labels.dk_struct()
    colors = parcellation_colors(dk)
    idx = {lab.name: lab.index for lab in dk.labels}
    # the failure we saw: one hemisphere labelled white matter: its colour must stand out from a T1w's white
    left, right = (np.asarray(to_rgb(colors[idx[f"{s} Cerebral White Matter"]])) for s in ("Left", "Right"))
    assert left.min() < 0.6 and right.min() < 0.6 and np.abs(left - right).max() > 0.2
    present = [
        idx[n] for n in ("Right Cerebral White Matter", "Left Insula", "Right Insula", "Left Caudate", "Brainstem")
    ]
    present += [idx["Left Superiorfrontal"], idx["Left Lateraloccipital"], idx["Right Lateraloccipital"]]
    legend = legend_groups(present, dk, colors)
    assert [group for group, _ in legend] == [
        "cortex: frontal",
        "cortex: occipital",
        "cortex: insula",
        "subcortical",
        "other",
    ]
    names = [name for _, entries in legend for name, _ in entries]
    assert names == [
        "superior frontal (left only)",
        "lateral occipital",
        "insula",
        "caudate (left only)",
        "right cerebral white matter",
        "brainstem",
    ]


def test_qc_summary_most_severe_first_with_display_names():
    from brainparc.reports.group import _flags_cell
    from brainparc.reports.qc import BRAIN, ICV, participant_flags

    dk = labels.dk_struct()
    vols = {lab.name: 0.0 for lab in dk.labels[1:]}
    vols.update({ICV: 1.4e6, BRAIN: 1.2e6, "Left Cerebral White Matter": 5e5, "Right Cerebral White Matter": 1e5})
    vols.update({"Left Thalamus Proper": 8e3, "Right Thalamus Proper": 8e3})
    flags = participant_flags(vols)
    assert [f["flag"] for f in flags] == ["asymmetry", "missing_region"]
    cell = _flags_cell(flags)
    assert cell.index("asymmetry: cerebral white matter (+1.33)") < cell.index("missing_region: 102 regions: ")
    assert "left precentral, right precentral, left postcentral and 99 more<details>" in cell
    assert "Superiorfrontal" not in cell and "left superior frontal" in cell  # display names, also folded


def test_group_report_qc_table(reports):
    group = reports[-1].read_text()
    table = group[group.index("<h2>QC</h2>") : group.index("<h2>Figures")]
    assert "Flags (scans): brain_fraction in 3, missing_region in 3." in table
    assert "<th>QC flags (most severe first)</th>" in table and "<details>" in table
    assert "Precentral" not in table and "n/a" not in table.split("<table>")[1].split("</tr>")[1]


def _ball(shape=(60, 60, 60), r=25.0):
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    return np.sqrt((grid**2).sum(0)), grid


@pytest.mark.parametrize("ventricle_tissue", [1, 2])
def test_image_flags_ventricles_not_csf(ventricle_tissue):
    from brainparc.reports.qc import image_flags

    dist, grid = _ball()
    mask = dist < 25
    tissue = np.where(dist < 15, 3, np.where(mask, 2, 0))
    anat = np.where(tissue == 3, 120.0, np.where(mask, 80.0, 0.0))
    vent = (np.abs(grid[0]) < 3) & (np.abs(grid[1]) < 8) & (np.abs(grid[2]) < 4)  # dark, deep
    anat[vent], tissue[vent] = 20.0, ventricle_tissue
    flags = image_flags(mask, tissue, anat, (2.0, 2.0, 2.0), np.eye(4))
    kinds = [f["flag"] for f in flags]
    assert kinds == ([] if ventricle_tissue == 1 else ["ventricles_not_csf"])
    if kinds:
        assert "100 % of the CSF-dark voxels deep in the brain" in flags[0]["detail"]


def test_image_flags_mask_blob():
    """A lump of mask below the brain is a blob, unless it is CSF within the CSF lining of an intracranial mask."""
    from brainparc.reports.qc import image_flags

    dist, _ = _ball((80, 60, 60))  # 2 mm voxels, brain from x = 18 to 62
    mask = dist < 22
    tissue = np.where(dist < 12, 3, np.where(mask, 2, 0))
    anat = np.where(mask, 100.0, 0.0)
    aff = np.eye(4) * [2, 2, 2, 1]
    assert image_flags(mask, tissue, anat, (2.0,) * 3, aff) == []
    lining = mask.copy()
    lining[12:18, 28:34, 28:34] = True  # 0-12 mm below the brain
    for label, flagged in ((1, False), (0, True)):  # CSF lines the brain; unlabelled mask there is a blob
        t = tissue.copy()
        t[12:18, 28:34, 28:34] = label
        assert bool(image_flags(lining, t, anat, (2.0,) * 3, aff)) == flagged
    mask[2:8, 28:34, 28:34] = True  # a sinus-like blob 20-32 mm below the brain: 6x6x6 voxels of 8 mm³, CSF
    tissue[2:8, 28:34, 28:34] = 1
    (flag,) = image_flags(mask, tissue, anat, (2.0,) * 3, aff)
    assert flag["flag"] == "mask_blob" and flag["items"] == [("blob at (9, 61, 61) mm", "1.7 ml")]


def test_totals_figure_legend_explains_every_marker():
    from brainparc.reports.figures import _pairs, distribution_legend

    totals = ["Intracranial volume", "CSF / ICV", "GM / ICV", "WM / ICV", "Brain (GM+WM) / ICV"]
    assert [(m, t) for m, _, t in distribution_legend(_pairs(totals))] == [
        ("s", "one scan"),
        ("x", "outlier (within age band)"),
    ]
