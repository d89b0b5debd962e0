"""Regional volumes of label maps (mm³), with names from a label table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainparc.labels import LabelTable


def regional_volumes(labels: np.ndarray, table: LabelTable, zooms: Sequence[float]) -> list[dict[str, object]]:
    """Volume of every label of ``table`` in an index map, one row per label (background excluded).

    Parameters
    ----------
    labels
        Integer index map (0..len(table)-1).
    table
        The label table the indices refer to.
    zooms
        Voxel size in mm (the first three values are used).

    Returns
    -------
    list of dict
        Rows with ``index``, ``name``, ``abbreviation``, ``freesurfer_id`` (or ``n/a``), ``voxels`` and
        ``volume_mm3``; labels absent from the map have 0 voxels.
    """
    voxel_mm3 = float(np.prod(np.asarray(zooms, dtype=np.float64)[:3]))
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=len(table))
    if counts.size > len(table):
        raise ValueError(f"label map holds values above {len(table) - 1}")
    return [
        {
            "index": lab.index,
            "name": lab.name,
            "abbreviation": lab.abbreviation,
            "freesurfer_id": "n/a" if lab.freesurfer_id is None else lab.freesurfer_id,
            "voxels": int(counts[lab.index]),
            "volume_mm3": round(float(counts[lab.index]) * voxel_mm3, 3),
        }
        for lab in table.labels[1:]
    ]


def rows_to_tsv(rows: Sequence[dict[str, object]]) -> str:
    """Render rows of equal keys as a TSV string (header line first, ``n/a`` for missing values)."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["\t".join(keys)] + ["\t".join(str(row.get(k, "n/a")) for k in keys) for row in rows]
    return "\n".join(lines) + "\n"
