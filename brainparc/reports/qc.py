"""Age-aware QC flags (pure functions). Nothing here hard-codes adult brain sizes.

Every threshold is relative: to the subject's own intracranial volume (infant brains are 0.3–0.7 L, adult ones
1.1–1.8 L, so absolute cut-offs are wrong at one end of the lifespan), to the left/right homologue, or to the
other scans of the same age band (robust z-scores at the group level).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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


def participant_flags(volumes: Mapping[str, float]) -> list[dict[str, str]]:
    """QC flags of one scan from its ``{name: volume_mm3}`` table (regions and totals).

    >>> vols = {ICV: 1000.0, BRAIN: 900.0, "Left X": 10.0, "Right X": 2.0, "Left Y": 0.0, "Right Y": 5.0}
    >>> [f["flag"] for f in participant_flags(vols)]
    ['missing_region', 'asymmetry']
    """
    flags: list[dict[str, str]] = []
    icv = float(volumes.get(ICV, 0.0))
    if icv <= 0:
        return [{"flag": "empty_mask", "severity": "error", "detail": "the brain mask is empty"}]
    regions = {k: float(v) for k, v in volumes.items() if k not in TOTALS}
    missing = [k for k, v in regions.items() if v <= 0]
    small = [k for k, v in regions.items() if 0 < v < MIN_REGION_FRACTION * icv]
    if missing:
        flags.append({"flag": "missing_region", "severity": "warning", "detail": ", ".join(missing)})
    if small:
        flags.append({"flag": "small_region", "severity": "warning", "detail": ", ".join(small)})
    brain = float(volumes.get(BRAIN, 0.0)) / icv
    lo, hi = BRAIN_FRACTION_RANGE
    if not lo <= brain <= hi:
        flags.append({"flag": "brain_fraction", "severity": "warning", "detail": f"GM+WM = {brain:.2f} of ICV"})
    asym = [f"{name} ({index:+.2f})" for name, index in asymmetries(regions).items() if abs(index) > MAX_ASYMMETRY]
    if asym:
        flags.append({"flag": "asymmetry", "severity": "warning", "detail": ", ".join(asym)})
    return flags


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
