"""Age-aware QC flags (pure functions). Nothing here hard-codes adult brain sizes.

Every threshold is relative: to the subject's own intracranial volume (infant brains are 0.3–0.7 L, adult ones
1.1–1.8 L, so absolute cut-offs are wrong at one end of the lifespan), to the left/right homologue, or to the
other scans of the same age band (robust z-scores at the group level).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

ICV = "Total intracranial (brain mask)"
BRAIN = "Brain (GM+WM)"
TOTALS = (ICV, "Tissue CSF", "Tissue GM", "Tissue WM", BRAIN)

#: A region below this fraction of the subject's ICV is "too small" (the smallest DK/aseg structures are ~1e-4).
MIN_REGION_FRACTION = 1e-5
#: |left - right| / mean(left, right) above this is flagged.
MAX_ASYMMETRY = 0.5
#: Brain (GM+WM) / ICV outside this range is flagged (neonates ~0.75-0.9, elderly ~0.65-0.8).
BRAIN_FRACTION_RANGE = (0.4, 0.995)
#: Robust z-score beyond which a regional volume is an outlier within its age band.
Z_OUTLIER = 3.5
#: Age bands (years, left-closed) used when ages are known.
AGE_BANDS = ((0, 2), (2, 6), (6, 13), (13, 18), (18, 40), (40, 65), (65, 200))


#: Severity ranks, most severe first; flags are listed in this order, then in :data:`FLAG_ORDER`.
SEVERITIES = ("error", "warning", "notice")
#: Flag kinds, most telling first (within one severity).
FLAG_ORDER = (
    "empty_mask",
    "brain_fraction",
    "mask_blob",
    "mask_vs_labels",
    "ventricles_not_csf",
    "asymmetry",
    "missing_region",
    "small_region",
)


def sort_flags(flags: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flags by severity (errors first), then by :data:`FLAG_ORDER`."""

    def key(flag: dict[str, Any]) -> tuple[int, int]:
        kind = flag["flag"]
        return SEVERITIES.index(flag["severity"]), FLAG_ORDER.index(kind) if kind in FLAG_ORDER else len(FLAG_ORDER)

    return sorted(flags, key=key)


def _flag(kind: str, severity: str, items: Sequence[tuple[str, str]], detail: str | None = None) -> dict[str, Any]:
    """A flag: ``items`` are ``(region name, value text)``, worst first; ``detail`` is the full one-line text."""
    if detail is None:
        detail = ", ".join(f"{name} ({value})" if value else name for name, value in items)
    return {"flag": kind, "severity": severity, "detail": detail, "items": list(items)}


#: Dice between the brain mask and the network's own labelled voxels below this is flagged (FastSurfer-style check).
MIN_MASK_LABEL_DICE = 0.9


def mask_label_agreement(mask: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How well the brain mask and the parcellation network's raw labels (before any masking or filling) agree.

    The parcellation labels every brain voxel, CSF included, so a mask that cuts cortex leaves labels outside it and a
    mask that keeps dura or skull holds voxels the network calls background: ``dice`` of the two, the fraction of the
    mask left unlabelled (``mask_unlabelled``: mask too loose) and the labelled voxels outside the mask as a fraction of
    the mask (``labels_outside``: mask too tight). Labels are only predicted near the mask (the ROI margin), so
    ``labels_outside`` counts a tight mask's misses up to that margin.
    """
    mask = np.asarray(mask, dtype=bool)
    labelled = np.asarray(labels) > 0
    n_mask = int(mask.sum())
    total = n_mask + int(labelled.sum())
    return {
        "dice": round(2.0 * int((mask & labelled).sum()) / total, 4) if total else float("nan"),
        "mask_unlabelled": round(int((mask & ~labelled).sum()) / n_mask, 4) if n_mask else float("nan"),
        "labels_outside": round(int((labelled & ~mask).sum()) / n_mask, 4) if n_mask else float("nan"),
    }


def mask_flags(agreement: Mapping[str, float] | None) -> list[dict[str, Any]]:
    """A warning when :func:`mask_label_agreement`'s Dice is below :data:`MIN_MASK_LABEL_DICE` (none when unknown)."""
    if not agreement or not agreement.get("dice", 1.0) < MIN_MASK_LABEL_DICE:
        return []
    detail = (
        f"brain mask vs the network's labels: Dice {agreement['dice']:.3f}; {100 * agreement['mask_unlabelled']:.1f} % "
        f"of the mask unlabelled (mask too loose?), labels outside the mask {100 * agreement['labels_outside']:.1f} % "
        f"of its volume (mask too tight?)"
    )
    return [_flag("mask_vs_labels", "warning", [], detail)]


def participant_flags(volumes: Mapping[str, float]) -> list[dict[str, Any]]:
    """QC flags of one scan from its ``{name: volume_mm3}`` table (regions and totals), most severe first.

    Each flag is ``{"flag", "severity", "detail", "items"}``: ``detail`` names every region (volume-table names),
    ``items`` lists ``(name, value)`` worst first for summaries (see :func:`summarise_flag`).

    >>> vols = {ICV: 1000.0, BRAIN: 900.0, "Left X": 10.0, "Right X": 2.0, "Left Y": 0.0, "Right Y": 5.0}
    >>> [f["flag"] for f in participant_flags(vols)]
    ['asymmetry', 'missing_region']
    """
    flags: list[dict[str, Any]] = []
    icv = float(volumes.get(ICV, 0.0))
    if icv <= 0:
        return [_flag("empty_mask", "error", [], "the brain mask is empty")]
    regions = {k: float(v) for k, v in volumes.items() if k not in TOTALS}
    missing = [(k, "") for k, v in regions.items() if v <= 0]
    small = sorted(((k, v) for k, v in regions.items() if 0 < v < MIN_REGION_FRACTION * icv), key=lambda kv: kv[1])
    if missing:
        flags.append(_flag("missing_region", "warning", missing))
    if small:
        flags.append(_flag("small_region", "notice", [(k, f"{v:.0f} mm³") for k, v in small]))
    brain = float(volumes.get(BRAIN, 0.0)) / icv
    lo, hi = BRAIN_FRACTION_RANGE
    if not lo <= brain <= hi:
        flags.append(_flag("brain_fraction", "warning", [], f"GM+WM = {brain:.2f} of ICV"))
    asym = sorted(((n, i) for n, i in asymmetries(regions).items() if abs(i) > MAX_ASYMMETRY), key=lambda x: -abs(x[1]))
    if asym:
        flags.append(_flag("asymmetry", "warning", [(name, f"{index:+.2f}") for name, index in asym]))
    return sort_flags(flags)


def display_name(name: str) -> str:
    """The label table's display name of a volume-table region name (unknown names are returned unchanged).

    >>> display_name("Left Superiorfrontal"), display_name("Cerebral White Matter"), display_name("Region 7")
    ('left superior frontal', 'cerebral white matter', 'Region 7')
    """
    from brainparc import labels

    table = labels.dk_struct()
    names = table.display_names()
    if name in names:
        return names[name]
    sided = names.get(f"Left {name}")  # an asymmetry: the pair's name without the side
    return sided.removeprefix("left ") if sided else name


def summarise_flag(flag: dict[str, Any], n_named: int = 3) -> str:
    """One short line: the flag kind, how many regions, the worst ``n_named`` by display name.

    >>> missing = [("Left Insula", ""), ("Right Insula", ""), ("Brainstem", "")]
    >>> summarise_flag(_flag("missing_region", "warning", missing), n_named=2)
    'missing_region: 3 regions: left insula, right insula and 1 more'
    >>> summarise_flag(_flag("asymmetry", "warning", [("Cerebral White Matter", "+1.54")]))
    'asymmetry: cerebral white matter (+1.54)'
    """
    items = flag.get("items") or []
    if not items:
        return f"{flag['flag']}: {flag['detail']}"
    text = ", ".join(display_items(items[:n_named]))
    if len(items) > n_named:
        text += f" and {len(items) - n_named} more"
    count = f"{len(items)} {'blobs' if flag['flag'] == 'mask_blob' else 'regions'}: " if len(items) > 1 else ""
    return f"{flag['flag']}: {count}{text}"


def display_items(items: Sequence[tuple[str, str]]) -> list[str]:
    """``name (value)`` of each item with the label table's display names."""
    return [f"{display_name(n)} ({v})" if v else display_name(n) for n, v in items]


#: Voxels darker than this fraction of the deep brain's median intensity are CSF-dark (ventricles in a T1w).
DARK_FRACTION = 0.5
#: "Deep" is farther from the mask's surface than this fraction of the brain's equivalent-sphere radius (~10 mm adult).
DEEP_RADIUS_FRACTION = 0.15
#: CSF-dark deep voxels below this fraction of ICV are too few to judge; above it, less than half CSF is flagged.
MIN_DARK_FRACTION_OF_ICV = 5e-4
#: Mask blobs away from the brain tissue (GM/WM) larger than this fraction of ICV are flagged (~1.4 ml adult).
MIN_BLOB_FRACTION_OF_ICV = 1e-3
#: Thin bridges narrower than this (mm) are cut before looking for blobs.
BLOB_OPENING_MM = 6.0


def image_flags(
    mask: np.ndarray,
    tissue: np.ndarray,
    anat: np.ndarray,
    zooms: Sequence[float],
    affine: np.ndarray,
) -> list[dict[str, Any]]:
    """QC flags read from the images (all on one grid): ventricles not CSF, and mask blobs outside the brain.

    ``ventricles_not_csf``: voxels deep in the brain (``DEEP_RADIUS_FRACTION`` of its equivalent radius from the mask
    surface) and CSF-dark in the T1w (below ``DARK_FRACTION`` of the deep median) are the ventricles; less than half of
    them CSF in ``tissue`` is flagged; depth is measured without the CSF within ``CSF_SHELL_MM`` (the width of the
    CSF layer ``core.skullstrip.csf_shell`` adds) of the mask's surface. ``mask_blob``: parts of the mask farther than
    ``BLOB_OPENING_MM`` (CSF: ``BLOB_OPENING_MM + CSF_SHELL_MM``) from the brain's tissue (GM/WM, thin bridges
    cut), each larger than ``MIN_BLOB_FRACTION_OF_ICV``, named by the scanner position of their centre (mm). Both
    thresholds are relative to the scan's own ICV.
    """
    from scipy import ndimage as ndi

    from brainparc.core.skullstrip import CSF_SHELL_MM  # whole-head masks are intracranial: CSF lines the brain

    flags: list[dict[str, Any]] = []
    mask = np.asarray(mask, dtype=bool)
    zooms = np.asarray(zooms, dtype=float)[:3]
    voxel = float(np.prod(zooms))
    icv = mask.sum() * voxel
    if icv <= 0:
        return flags
    is_csf = np.asarray(tissue) == 1
    outer_csf = is_csf & (ndi.distance_transform_edt(mask, sampling=zooms) <= CSF_SHELL_MM)
    inside = mask & ~outer_csf  # the brain within its CSF: "deep" is measured from the brain's surface
    radius = (3 * inside.sum() * voxel / (4 * np.pi)) ** (1 / 3)
    deep = ndi.distance_transform_edt(inside, sampling=zooms) > DEEP_RADIUS_FRACTION * radius
    anat = np.asarray(anat, dtype=np.float32)
    if deep.any():
        dark = deep & (anat < DARK_FRACTION * float(np.median(anat[deep])))
        n_dark = int(dark.sum())
        csf = float(np.mean(tissue[dark] == 1)) if n_dark else 1.0
        if n_dark * voxel >= MIN_DARK_FRACTION_OF_ICV * icv and csf < 0.5:
            gm = float(np.mean(tissue[dark] == 2))
            detail = (
                f"{100 * (1 - csf):.0f} % of the CSF-dark voxels deep in the brain (the ventricles, "
                f"{n_dark * voxel / 1000:.1f} ml) are not CSF in the tissue map ({100 * gm:.0f} % GM)"
            )
            flags.append(_flag("ventricles_not_csf", "warning", [], detail))
    brain = np.isin(tissue, (2, 3)) & mask
    steps = np.maximum(1, np.round(BLOB_OPENING_MM / 2 / zooms)).astype(int)
    ball = np.ones(tuple(2 * steps + 1), bool)
    core, n = ndi.label(ndi.binary_opening(brain, structure=ball))
    if n:
        main = core == 1 + int(np.argmax(np.bincount(core.ravel())[1:]))
        far = ndi.distance_transform_edt(~main, sampling=zooms)
        away = mask & (far > BLOB_OPENING_MM + np.where(is_csf, CSF_SHELL_MM, 0.0))  # CSF may line the brain
        blobs = ndi.label(away)[0]
        sizes = np.bincount(blobs.ravel()) * voxel
        big = [b for b in np.argsort(-sizes) if b and sizes[b] >= MIN_BLOB_FRACTION_OF_ICV * icv]
        items = []
        for b in big:
            centre = np.asarray(affine, dtype=float) @ np.append(ndi.center_of_mass(blobs == b), 1.0)
            where = "({:.0f}, {:.0f}, {:.0f}) mm".format(*centre[:3])
            items.append((f"blob at {where}", f"{sizes[b] / 1000:.1f} ml"))
        if items:
            flags.append(_flag("mask_blob", "warning", items))
    return sort_flags(flags)


def asymmetries(regions: Mapping[str, float]) -> dict[str, float]:
    """Asymmetry index ``(L - R) / mean(L, R)`` of every ``Left X`` / ``Right X`` pair with some volume."""
    out = {}
    for name, left in regions.items():
        if not name.startswith("Left "):
            continue
        right = regions.get("Right " + name[5:])
        if right is None or left + right <= 0:
            continue
        out[name[5:]] = 2.0 * (left - right) / (left + right)
    return out


def robust_z(values: Sequence[float]) -> np.ndarray:
    """``(x - median) / (1.4826 * MAD)``; zeros when the MAD is 0 or there are fewer than 3 values.

    >>> robust_z([1.0, 2.0, 3.0, 100.0]).round(1).tolist()
    [-1.0, -0.3, 0.3, 65.8]
    """
    x = np.asarray(values, dtype=float)
    if x.size < 3:
        return np.zeros_like(x)
    med = np.nanmedian(x)
    mad = 1.4826 * np.nanmedian(np.abs(x - med))
    return np.zeros_like(x) if not mad > 0 else (x - med) / mad


def age_band(age: float | None) -> str:
    """The band label of an age in years (``'all'`` when unknown).

    >>> age_band(0.5), age_band(30), age_band(None)
    ('0-2y', '18-40y', 'all')
    """
    if age is None or not np.isfinite(age):
        return "all"
    for lo, hi in AGE_BANDS:
        if lo <= age < hi:
            return f"{lo}-{hi}y" if hi < 200 else f"{lo}y+"
    return "all"


def bands_for(ages: Iterable[float | None]) -> list[str]:
    """Age bands of a group; everybody in ``'all'`` when any age is missing (bands must be comparable)."""
    ages = list(ages)
    if not ages or any(a is None or not np.isfinite(a) for a in ages):
        return ["all"] * len(ages)
    return [age_band(a) for a in ages]
