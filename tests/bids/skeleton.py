"""BIDS skeleton factory for tests: tiny synthetic T1w phantoms in a BIDS tree (sessions, runs, acquisitions)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np


def phantom(shape=(40, 44, 40), zoom: float = 1.0, seed: int = 0) -> nib.Nifti1Image:
    """A skull-stripped-looking ellipsoid brain (WM core, GM shell) on zero background, RAS."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.85, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
    rng = np.random.default_rng(seed)
    data = np.where(r < 0.6, 110.0, np.where(r < 1.0, 70.0, 0.0)) + rng.normal(0, 2, shape) * (r < 1.0)
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([zoom, zoom, zoom, 1.0]))
    img.header.set_xyzt_units("mm")
    return img


def make_bids(
    root: Path,
    files: Iterable[str],
    ages: dict[str, float] | None = None,
    session_ages: dict[str, dict[str, float]] | None = None,
    image=None,
) -> Path:
    """Create a BIDS dataset at ``root`` with the given relative T1w paths (tiny phantoms unless ``image``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.10.0"}))
    (root / "README").write_text("test dataset\n")
    subjects = set()
    for i, rel in enumerate(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(image if image is not None else phantom(seed=i), path)
        subjects.add(rel.split("/")[0])
    lines = ["participant_id\tage"] + [f"{s}\t{(ages or {}).get(s, 'n/a')}" for s in sorted(subjects)]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    for sub, sess in (session_ages or {}).items():
        text = "session_id\tage\n" + "".join(f"ses-{k}\t{v}\n" for k, v in sess.items())
        (root / sub / f"{sub}_sessions.tsv").write_text(text)
    return root
