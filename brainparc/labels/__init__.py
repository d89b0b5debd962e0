"""Label tables: the 106-label DK + subcortical parcellation and the 4-class tissue map.

The tables are package data (``dk_struct.tsv``, ``tissue.tsv``). Colours are FreeSurferColorLUT's; the
BrainParc index ↔ FreeSurfer id mapping and the parcel → tissue map follow the reference (spec §2.3–2.4).
``dk_struct.tsv`` also gives each label a readable ``display_name`` (without the side: "superior frontal") and a
``group`` for legends: ``cortex: <lobe>`` (frontal, parietal, temporal, occipital, cingulate, insula),
``subcortical`` or ``other``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

__all__ = ["TISSUE_NAMES", "Label", "LabelTable", "dk_struct", "tissue"]

TISSUE_NAMES = ("Background", "CSF", "GM", "WM")


@dataclass(frozen=True)
class Label:
    """One row of a label table."""

    index: int
    name: str
    abbreviation: str
    color: str
    freesurfer_id: int | None = None
    tissue: int | None = None
    display_name: str = ""  # readable, without the side ("superior frontal")
    group: str = ""  # "cortex: <lobe>", "subcortical", "other" (legends)

    @property
    def side(self) -> str | None:
        """``"left"``, ``"right"`` or ``None`` (from the name's ``Left ``/``Right `` prefix)."""
        first = self.name.split(" ", 1)[0]
        return first.lower() if first in ("Left", "Right") else None

    @property
    def display(self) -> str:
        """The display name with its side: ``"left superior frontal"``, ``"brainstem"``.

        >>> dk_struct()[7].display, dk_struct()[99].display
        ('left superior frontal', 'brainstem')
        """
        base = self.display_name or self.name
        return f"{self.side} {base}" if self.side else base


class LabelTable:
    """An ordered label table with index ↔ FreeSurfer-id conversion."""

    def __init__(self, labels: list[Label]):
        if [lab.index for lab in labels] != list(range(len(labels))):
            raise ValueError("label indices must be 0..N-1 in order")
        self.labels = tuple(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Label:
        return self.labels[index]

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def display_names(self) -> dict[str, str]:
        """``{name: display}`` of every label (``"Left Superiorfrontal"`` → ``"left superior frontal"``)."""
        return {lab.name: lab.display for lab in self.labels}

    @property
    def freesurfer_ids(self) -> np.ndarray:
        """FreeSurfer id of every index (int32 array of length N)."""
        return np.array([lab.freesurfer_id for lab in self.labels], dtype=np.int32)

    @property
    def tissue_of(self) -> np.ndarray:
        """Tissue class (0 bg, 1 CSF, 2 GM, 3 WM) of every index."""
        return np.array([lab.tissue for lab in self.labels], dtype=np.int64)

    def to_freesurfer(self, index_map: np.ndarray) -> np.ndarray:
        """Map an index image (0..N-1) to FreeSurfer ids (int32)."""
        idx = np.asarray(index_map)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"index map values must lie in 0..{len(self) - 1}")
        return self.freesurfer_ids[idx.astype(np.int64)]

    def from_freesurfer(self, fs_map: np.ndarray, unknown: int = 0) -> np.ndarray:
        """Map a FreeSurfer-id image to indices; ids not in the table become ``unknown``."""
        fs = np.asarray(fs_map).astype(np.int64)
        lut = np.full(max(int(fs.max(initial=0)), int(self.freesurfer_ids.max())) + 1, unknown, np.int16)
        lut[self.freesurfer_ids] = np.arange(len(self), dtype=np.int16)
        if fs.min(initial=0) < 0:
            raise ValueError("FreeSurfer ids must be non-negative")
        return lut[fs]

    def to_tissue(self, index_map: np.ndarray) -> np.ndarray:
        """Aggregate a parcellation index map into the 4-class tissue map."""
        return self.tissue_of[np.asarray(index_map).astype(np.int64)].astype(np.int16)


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


@cache
def dk_struct() -> LabelTable:
    """The 107-class BrainParc table (background + 106 DK-struct labels)."""
    return LabelTable(
        [
            Label(
                int(r["index"]),
                r["name"],
                r["abbreviation"],
                r["color"],
                int(r["freesurfer_id"]),
                int(r["tissue"]),
                r["display_name"],
                r["group"],
            )
            for r in _read("dk_struct.tsv")
        ]
    )


@cache
def tissue() -> LabelTable:
    """The 4-class tissue table (background, CSF, GM, WM)."""
    return LabelTable([Label(int(r["index"]), r["name"], r["abbreviation"], r["color"]) for r in _read("tissue.tsv")])
