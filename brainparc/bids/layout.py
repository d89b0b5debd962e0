"""Select the T1w images to process with pybids, and read ages from ``participants.tsv`` / ``sessions.tsv``.

Nothing here writes into the BIDS folder: the pybids database (``--bids-database-dir``) lives in the work or
output folder, so the input dataset may be read-only.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

#: Queries applied to every selection; ``--bids-filter-file`` entries under ``t1w`` are merged on top.
DEFAULT_T1W_QUERY: dict[str, Any] = {"datatype": "anat", "suffix": "T1w", "extension": [".nii", ".nii.gz"]}


class BIDSError(ValueError):
    """The input folder or the requested selection is not usable; the message says what to do."""


@dataclass(frozen=True)
class T1wInput:
    """One selected T1w image and what we know about it."""

    path: Path
    subject: str
    entities: dict[str, Any] = field(default_factory=dict)
    age: float | None = None

    @property
    def session(self) -> str | None:
        return self.entities.get("session")

    @property
    def key(self) -> str:
        """A name unique within the dataset, usable as a nipype workflow name (``sub_01_ses_1_run_1``)."""
        parts = [f"sub_{self.subject}"]
        for ent in ("session", "acquisition", "ceagent", "reconstruction", "run"):
            if self.entities.get(ent) is not None:
                parts.append(f"{ent[:3]}_{self.entities[ent]}")
        return "_".join(parts).replace("-", "_").replace(".", "_")


def strip_prefix(label: str, prefix: str) -> str:
    """``'sub-01' -> '01'`` (prefix optional on the command line).

    >>> strip_prefix("sub-01", "sub-"), strip_prefix("01", "sub-")
    ('01', '01')
    """
    return label[len(prefix) :] if label.startswith(prefix) else label


def check_bids_dir(bids_dir: Path) -> None:
    """Refuse folders that are clearly not BIDS datasets (no ``dataset_description.json`` and no ``sub-*``)."""
    if not bids_dir.is_dir():
        raise BIDSError(f"BIDS_DIR {bids_dir} does not exist or is not a folder")
    if not (bids_dir / "dataset_description.json").is_file():
        raise BIDSError(
            f"{bids_dir} is not a BIDS dataset: dataset_description.json is missing "
            "(see https://bids-specification.readthedocs.io)"
        )
    if not any(p.is_dir() for p in bids_dir.glob("sub-*")):
        raise BIDSError(f"{bids_dir} holds no sub-* folders")


def validate_bids(bids_dir: Path) -> str | None:
    """Run the offline deno BIDS validator when installed; return its error summary (``None`` if valid/absent)."""
    import sys

    beside = Path(sys.executable).parent / "bids-validator-deno"  # installed in the same environment
    exe = shutil.which("bids-validator-deno") or (str(beside) if beside.is_file() else None)
    if exe is None:
        LOGGER.info("bids-validator-deno not found: skipping BIDS validation")
        return None
    proc = subprocess.run([exe, str(bids_dir), "--json"], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return None
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
        errors = sorted({i.get("code", "?") for i in issues if i.get("severity") == "error"})
    except (ValueError, KeyError, TypeError):
        errors = [proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"]
    return ", ".join(errors) if errors else None


def load_layout(bids_dir: Path, database_dir: Path | None = None, reset_database: bool = False):
    """A pybids layout of ``bids_dir`` (derivatives ignored); the database, if any, lives outside ``bids_dir``."""
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(validate=False, ignore=("code", "stimuli", "sourcedata", "models", "derivatives"))
    kwargs: dict[str, Any] = {"indexer": indexer}
    if database_dir is not None:
        database_dir.mkdir(parents=True, exist_ok=True)
        kwargs.update(database_path=database_dir, reset_database=reset_database)
    return BIDSLayout(str(bids_dir), validate=False, **kwargs)


def load_filters(path: Path | None) -> dict[str, Any]:
    """Read a ``--bids-filter-file``: ``{"t1w": {entity: value, ...}}`` (fMRIPrep's format)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BIDSError(f"cannot read --bids-filter-file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("t1w", {}), dict):
        raise BIDSError(f'--bids-filter-file {path}: expected {{"t1w": {{"session": "1", ...}}}}')
    unknown = set(data) - {"t1w"}
    if unknown:
        LOGGER.warning("--bids-filter-file: ignoring queries for %s (brainparc only reads T1w)", sorted(unknown))
    return dict(data.get("t1w", {}))


def collect_t1w(
    layout,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    filters: dict[str, Any] | None = None,
) -> tuple[list[T1wInput], list[str]]:
    """Every T1w selected by the participant/session labels and the filters, with ages.

    Returns
    -------
    (inputs, empty)
        The selected images (sorted by path) and the requested participants that have no matching T1w.

    Raises
    ------
    BIDSError
        When a requested participant does not exist in the dataset.
    """
    available = sorted(layout.get_subjects())
    wanted = [strip_prefix(p, "sub-") for p in participants] if participants else available
    missing = [p for p in wanted if p not in available]
    if missing:
        shown = ", ".join(available[:10]) + (" ..." if len(available) > 10 else "")
        raise BIDSError(f"participant(s) {', '.join(missing)} not found in the dataset (available: {shown})")
    query = {**DEFAULT_T1W_QUERY, **(filters or {})}
    if sessions:
        query["session"] = [strip_prefix(s, "ses-") for s in sessions]
    ages = read_ages(Path(layout.root))
    inputs: list[T1wInput] = []
    empty: list[str] = []
    for subject in wanted:
        files = layout.get(subject=subject, return_type="object", **query)
        if not files:
            empty.append(subject)
        for bf in files:
            ents = {k: v for k, v in bf.get_entities().items() if k not in ("subject", "datatype", "suffix")}
            ents.pop("extension", None)
            age = ages.get((subject, ents.get("session")), ages.get((subject, None)))
            inputs.append(T1wInput(Path(bf.path), subject, ents, age))
    return sorted(inputs, key=lambda t: str(t.path)), empty


def _age(value: str | None) -> float | None:
    try:
        age = float(value) if value not in (None, "", "n/a") else None
    except ValueError:
        return None
    return age


def read_ages(bids_dir: Path) -> dict[tuple[str, str | None], float]:
    """Ages (``age`` column) keyed by ``(subject, session)``; ``session`` is ``None`` for participants.tsv."""
    ages: dict[tuple[str, str | None], float] = {}
    for row in _read_tsv(bids_dir / "participants.tsv"):
        age = _age(row.get("age"))
        if age is not None and row.get("participant_id"):
            ages[(strip_prefix(row["participant_id"], "sub-"), None)] = age
    for tsv in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        subject = strip_prefix(tsv.parent.name, "sub-")
        for row in _read_tsv(tsv):
            age = _age(row.get("age"))
            if age is not None and row.get("session_id"):
                ages[(subject, strip_prefix(row["session_id"], "ses-"))] = age
    return ages


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def bids_uri(path: Path, bids_dir: Path, dataset: str = "raw") -> str:
    """``bids:<dataset>:<relative path>`` (BIDS URI, resolved through ``DatasetLinks``)."""
    return f"bids:{dataset}:{os.path.relpath(path, bids_dir)}"
