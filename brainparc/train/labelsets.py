"""Per-dataset label declarations and partial-label targets.

Training data come with different label sets: BrainParc's 106 DK-struct labels, Mindboggle's DKT31 + aseg (no
bankssts/frontal pole/temporal pole, no cerebral WM label), aseg-level maps with one cortex label per hemisphere,
tissue-only maps.  A :class:`LabelDeclaration` says, for one such label set, which of our 107 classes (background +
106, spec §2.3) each source label value can be.  Every voxel's target is then a **group**: a set of classes that
the voxel certainly belongs to one of (a singleton for fully labelled data), or ``IGNORE`` (-1) when nothing is known.
The losses sum the predicted probabilities of a group's members (``G @ p``), so a voxel labelled with a merged group
is never penalised for choosing any member, and ignored voxels contribute nothing; see :mod:`brainparc.train.losses`.

JSON schema (``labels.json`` in ``ROOT/data/<folder>/``, or a shipped name such as ``"dkt31_aseg"``)::

    {
      "name": "dkt31_aseg",
      "label_space": "freesurfer",          # freesurfer | brainparc | tissue: what the values in the files are
      "groups": {"1030": [77, 85], ...},    # source value -> the BrainParc classes it may be (indices, table
                                            #   abbreviations such as "Temporal_Sup_L", or "@cortex_L"/"@cortex_R")
      "ignore_ids": [91, 92, 630],          # source values whose voxels are ignored (no BrainParc equivalent)
      "unknown": "error",                   # values in none of the above: error | ignore | background
      "unlabelled_in_brain": "ignore",      # value 0 inside the brain mask: background | ignore | [classes]
      "missing": [91, 92, 102],             # classes no labelled voxel can be (checked, see below)
      "description": "free text"
    }

Values not listed in ``groups`` map through the label space's default: ``brainparc`` values are class indices,
``freesurfer`` values go through the table's FreeSurfer ids (``labels.dk_struct()``), ``tissue`` values 0-3 are the
sets of classes of that tissue (spec §2.4).  A default that lands on a ``missing`` class is ignored.  The declaration
is checked for completeness: every class is either reachable from some source value (explicitly or by default) or
declared ``missing``, never both — a class that is neither would silently be taught as "never present".

Groups from all declarations used in one run live in one :class:`GroupRegistry` whose first 107 groups are the
singletons ``{0} … {106}`` (so fully labelled targets are the class indices themselves).  Its grouping matrix
``G`` (n_groups × 107, 0/1) is what the losses take.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from brainparc import labels

__all__ = [
    "IGNORE",
    "NUM_CLASSES",
    "NUM_TISSUES",
    "CompiledDeclaration",
    "GroupRegistry",
    "LabelDeclaration",
    "builtin_declaration",
    "builtin_names",
    "load_declaration",
]

IGNORE = -1
NUM_CLASSES = 107
NUM_TISSUES = 4
_SPACES = ("freesurfer", "brainparc", "tissue")
_UNKNOWN = ("error", "ignore", "background")


def _cortex(hemi: str) -> list[int]:
    fs = labels.dk_struct().freesurfer_ids
    lo = 1000 if hemi == "L" else 2000
    return [i for i in range(NUM_CLASSES) if lo <= fs[i] < lo + 1000]


def _resolve_classes(values: Iterable[int | str]) -> frozenset[int]:
    """Turn a list of class indices / abbreviations / macros into a set of class indices."""
    table = labels.dk_struct()
    by_abbr = {lab.abbreviation: lab.index for lab in table}
    out: set[int] = set()
    for v in values:
        if isinstance(v, str) and v.startswith("@cortex_"):
            out.update(_cortex(v[-1]))
        elif isinstance(v, str) and not v.lstrip("-").isdigit():
            if v not in by_abbr:
                raise ValueError(f"unknown class abbreviation {v!r}")
            out.add(by_abbr[v])
        else:
            c = int(v)
            if not 0 <= c < NUM_CLASSES:
                raise ValueError(f"class index {c} outside 0..{NUM_CLASSES - 1}")
            out.add(c)
    if not out:
        raise ValueError("a group must contain at least one class")
    return frozenset(out)


@dataclass(frozen=True)
class LabelDeclaration:
    """What the label values of one dataset mean in terms of the 107 BrainParc classes (schema in module doc)."""

    name: str
    label_space: str = "brainparc"
    groups: dict[int, frozenset[int]] = field(default_factory=dict)
    ignore_ids: frozenset[int] = frozenset()
    unknown: str = "error"
    unlabelled_in_brain: str | frozenset[int] = "background"
    missing: frozenset[int] = frozenset()
    description: str = ""

    def __post_init__(self) -> None:
        if self.label_space not in _SPACES:
            raise ValueError(f"label_space must be one of {_SPACES}, got {self.label_space!r}")
        if self.unknown not in _UNKNOWN:
            raise ValueError(f"unknown must be one of {_UNKNOWN}, got {self.unknown!r}")
        if isinstance(self.unlabelled_in_brain, str) and self.unlabelled_in_brain not in ("background", "ignore"):
            raise ValueError("unlabelled_in_brain must be 'background', 'ignore' or a list of classes")
        clash = set(self.groups) & set(self.ignore_ids)
        if clash:
            raise ValueError(f"{self.name}: ids both grouped and ignored: {sorted(clash)}")
        covered = set().union(*self.source_groups().values()) if self.source_groups() else set()
        if not isinstance(self.unlabelled_in_brain, str):
            covered |= self.unlabelled_in_brain
        both = covered & set(self.missing)
        if both:
            raise ValueError(f"{self.name}: classes declared missing but reachable from a label: {sorted(both)}")
        neither = set(range(NUM_CLASSES)) - covered - set(self.missing)
        if neither:
            raise ValueError(f"{self.name}: classes neither labelled nor declared missing: {sorted(neither)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelDeclaration:
        """Build from the JSON form (see module docstring); unknown keys are rejected."""
        allowed = {"name", "label_space", "groups", "ignore_ids", "unknown", "unlabelled_in_brain", "missing"}
        extra = set(d) - allowed - {"description"} - {k for k in d if k.startswith("_")}
        if extra:
            raise ValueError(f"unknown keys in label declaration: {sorted(extra)}")
        inside = d.get("unlabelled_in_brain", "background")
        return cls(
            name=str(d["name"]),
            label_space=d.get("label_space", "brainparc"),
            groups={int(k): _resolve_classes(v) for k, v in d.get("groups", {}).items()},
            ignore_ids=frozenset(int(i) for i in d.get("ignore_ids", [])),
            unknown=d.get("unknown", "error"),
            unlabelled_in_brain=inside if isinstance(inside, str) else _resolve_classes(inside),
            missing=_resolve_classes(d["missing"]) if d.get("missing") else frozenset(),
            description=str(d.get("description", "")),
        )

    def default_groups(self) -> dict[int, frozenset[int]]:
        """Source value -> classes for the label space's default mapping (before overrides)."""
        table = labels.dk_struct()
        if self.label_space == "brainparc":
            return {c: frozenset({c}) for c in range(NUM_CLASSES)}
        if self.label_space == "freesurfer":
            return {int(fs): frozenset({c}) for c, fs in enumerate(table.freesurfer_ids)}
        tissue_of = table.tissue_of
        return {t: frozenset(np.flatnonzero(tissue_of == t).tolist()) for t in range(NUM_TISSUES)}

    def source_groups(self) -> dict[int, frozenset[int]]:
        """Source value -> classes, after overrides, ignores and missing classes are applied."""
        out = {}
        for sid, cls_set in self.default_groups().items():
            if sid in self.ignore_ids or cls_set & self.missing:
                continue
            out[sid] = cls_set
        out.update(self.groups)
        return out


def builtin_names() -> list[str]:
    """Names of the declarations shipped as package data (``brainparc/train/declarations/*.json``)."""
    root = resources.files(__package__).joinpath("declarations")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


@cache
def builtin_declaration(name: str) -> LabelDeclaration:
    """A shipped declaration: ``full``, ``dkt31_aseg``, ``aseg`` or ``tissue_only``."""
    if name not in builtin_names():
        raise ValueError(f"no built-in label declaration {name!r}; choose from {builtin_names()}")
    text = resources.files(__package__).joinpath("declarations").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return LabelDeclaration.from_dict(json.loads(text))


def load_declaration(source: str | Path | dict[str, Any] | LabelDeclaration) -> LabelDeclaration:
    """A declaration from a built-in name, a JSON file path, a dict or a declaration (returned as is)."""
    if isinstance(source, LabelDeclaration):
        return source
    if isinstance(source, dict):
        return LabelDeclaration.from_dict(source)
    if isinstance(source, str) and source in builtin_names():
        return builtin_declaration(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"label declaration {source!r} is neither a built-in name {builtin_names()} nor a file")
    return LabelDeclaration.from_dict(json.loads(path.read_text(encoding="utf-8")))


class GroupRegistry:
    """An ordered set of class groups shared by every declaration of a run.

    Groups 0..106 are the singletons; merged groups are appended as declarations are compiled.  ``tissue_groups``
    is the same for the 4 tissue classes; ``tissue_of_group[g]`` is the tissue group of parcel group ``g`` (the set of
    tissues of its members, spec §2.4 map), so tissue targets follow from parcel targets.
    """

    def __init__(self, tissue_of_class: Sequence[int] | None = None):
        self.tissue_of_class = np.asarray(
            labels.dk_struct().tissue_of if tissue_of_class is None else tissue_of_class, dtype=np.int64
        )
        self.groups: list[frozenset[int]] = [frozenset({c}) for c in range(NUM_CLASSES)]
        self.tissue_groups: list[frozenset[int]] = [frozenset({t}) for t in range(NUM_TISSUES)]
        self._index = {g: i for i, g in enumerate(self.groups)}
        self._tindex = {g: i for i, g in enumerate(self.tissue_groups)}

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, classes: Iterable[int]) -> int:
        """Index of the group ``classes`` (registered if new)."""
        g = frozenset(int(c) for c in classes)
        if g not in self._index:
            self._index[g] = len(self.groups)
            self.groups.append(g)
            t = frozenset(self.tissue_of_class[sorted(g)].tolist())
            if t not in self._tindex:
                self._tindex[t] = len(self.tissue_groups)
                self.tissue_groups.append(t)
        return self._index[g]

    @staticmethod
    def _matrix(groups: Sequence[frozenset[int]], n: int) -> np.ndarray:
        m = np.zeros((len(groups), n), dtype=np.float32)
        for i, g in enumerate(groups):
            m[i, sorted(g)] = 1.0
        return m

    @property
    def grouping(self) -> np.ndarray:
        """Parcel grouping matrix ``G`` (n_groups × 107, float32 0/1)."""
        return self._matrix(self.groups, NUM_CLASSES)

    @property
    def tissue_grouping(self) -> np.ndarray:
        """Tissue grouping matrix (n_tissue_groups × 4)."""
        return self._matrix(self.tissue_groups, NUM_TISSUES)

    @property
    def tissue_of_group(self) -> np.ndarray:
        """Tissue group index of every parcel group (int64, length n_groups)."""
        return np.array(
            [self._tindex[frozenset(self.tissue_of_class[sorted(g)].tolist())] for g in self.groups], dtype=np.int64
        )

    def tissue_targets(self, parc_targets: np.ndarray) -> np.ndarray:
        """Tissue targets (tissue group ids, IGNORE kept) derived from parcel targets."""
        t = np.asarray(parc_targets)
        lut = np.append(self.tissue_of_group, IGNORE)  # index -1 -> IGNORE
        return lut[t].astype(np.int16)

    def compile(self, declaration: LabelDeclaration) -> CompiledDeclaration:
        """Register the declaration's groups and return its source-value → group lookup."""
        lut = {sid: self.add(cls_set) for sid, cls_set in sorted(declaration.source_groups().items())}
        inside = declaration.unlabelled_in_brain
        if inside == "background":
            in_brain = lut.get(0, IGNORE)
        elif inside == "ignore":
            in_brain = IGNORE
        else:
            in_brain = self.add(inside)
        unknown = {"error": None, "ignore": IGNORE, "background": self.add({0})}[declaration.unknown]
        return CompiledDeclaration(declaration, lut, in_brain, unknown)


@dataclass(frozen=True)
class CompiledDeclaration:
    """A declaration bound to a :class:`GroupRegistry`: turns label maps into group targets."""

    declaration: LabelDeclaration
    lut: dict[int, int]
    in_brain_zero: int
    unknown: int | None

    @property
    def needs_brain_mask(self) -> bool:
        """Whether value 0 means something other than background inside the brain."""
        return self.in_brain_zero != self.lut.get(0, IGNORE)

    def to_targets(self, label_map: np.ndarray, brain_mask: np.ndarray | None = None) -> np.ndarray:
        """Per-voxel group ids (int16; ``IGNORE`` = -1) of a label map in the declaration's label space.

        Parameters
        ----------
        label_map
            Integer-valued label image (float storage is rounded), e.g. FreeSurfer ids for ``freesurfer`` space.
        brain_mask
            Where value 0 means "inside the brain but unlabelled" (``unlabelled_in_brain``).  Needed only when the
            declaration reads such voxels differently from background; when omitted it is estimated as the
            hole-filled, closed support of the labels (prefer the skull-stripped image's support).
        """
        lab = np.rint(np.asarray(label_map)).astype(np.int64)
        if lab.size and lab.min() < 0:
            raise ValueError("label maps must be non-negative")
        vals = np.flatnonzero(np.bincount(lab.ravel())) if lab.size else np.zeros(0, np.int64)  # O(N), no sort
        lut = np.full(int(vals.max(initial=0)) + 1, IGNORE, dtype=np.int16)
        unknown = [int(v) for v in vals if int(v) not in self.lut and int(v) not in self.declaration.ignore_ids]
        if unknown and self.unknown is None:
            raise ValueError(f"label declaration {self.declaration.name!r}: undeclared label values {unknown[:20]}")
        for v in unknown:
            lut[v] = self.unknown
        for sid, gid in self.lut.items():
            if sid < lut.size:
                lut[sid] = gid
        out = lut[lab]
        if self.needs_brain_mask:
            if brain_mask is None:
                brain_mask = estimate_brain_mask(lab > 0)
            out[(lab == 0) & (np.asarray(brain_mask) > 0)] = self.in_brain_zero
        return out


def estimate_brain_mask(labelled: np.ndarray, closing: int = 3) -> np.ndarray:
    """Fallback brain mask: closing then hole filling of the labelled voxels (bool)."""
    from scipy import ndimage

    m = ndimage.binary_closing(labelled, structure=ndimage.generate_binary_structure(3, 1), iterations=closing)
    return ndimage.binary_fill_holes(m | labelled)
