"""Validation with the run-time inference (sliding window), Dice tables and the learning-curve plot.

Each validation subject (the ``val`` fold) is predicted whole by the same functions ``brainparc parcellate`` uses
(:func:`brainparc.inference.predict_parcellation` on the skull-stripped brain and its edge map,
:func:`brainparc.inference.predict_brain_mask` on the head image), in the model card's normalisation.

Dice per region compares the predicted class with the subject's targets where the label is a single class (merged
groups and ignored voxels are left out, so partially labelled data are scored only on what they label): for class c,
``dice_c = 2|P_c ∩ T_c| / (|P_c| + |T_c|)`` over those voxels, NaN when c is absent from both.  Tissue Dice uses the
tissue targets derived from the labels.  ``mean_parc`` averages regions 1–106 and ``mean_tissue`` CSF/GM/WM,
ignoring NaNs.  For ``strip`` the table has one column ``brain`` (predicted probability > 0.5 vs the mask).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from brainparc.train.data import PatchDataset, _edge_array, find_file
from brainparc.train.labelsets import NUM_CLASSES, NUM_TISSUES

__all__ = ["dice_per_class", "plot_learning_curve", "region_names", "validate", "write_dice_csv"]

TISSUE_NAMES = ("tissue_CSF", "tissue_GM", "tissue_WM")


def region_names() -> list[str]:
    """Column names of the 106 regions (label-table abbreviations, index 1…106)."""
    from brainparc import labels

    return [lab.abbreviation for lab in labels.dk_struct()][1:NUM_CLASSES]


def dice_per_class(pred: np.ndarray, target: np.ndarray, classes: Iterable[int], valid: np.ndarray) -> np.ndarray:
    """Dice of each class over the ``valid`` voxels (NaN where the class is absent from both maps)."""
    p, t = np.asarray(pred)[valid], np.asarray(target)[valid]
    cls = np.asarray(list(classes))
    n = int(max(cls.max(initial=0), p.max(initial=0), t.max(initial=0))) + 1
    inter = np.bincount(p[p == t].astype(np.int64), minlength=n)
    sp, st = np.bincount(p.astype(np.int64), minlength=n), np.bincount(t.astype(np.int64), minlength=n)
    den = (sp + st)[cls].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * inter[cls] / den, np.nan)


def _parc_row(model: nn.Module, ds: PatchDataset, index: int, card: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    from brainparc.inference import predict_parcellation

    vol = ds.load_subject(index)
    if vol["image"] is None:
        return {}
    edge = _edge_array(vol["image"]) if isinstance(vol["edge"], str) else vol["edge"]
    res = predict_parcellation(model, vol["image"], edge, dict(card), mask=vol["brain"], coords=vol["coords"], **kw)
    targets = np.asarray(vol["targets"], dtype=np.int64)
    single = (targets >= 0) & (targets < NUM_CLASSES)
    parc = dice_per_class(res.parc, targets, range(1, NUM_CLASSES), single)
    tissue_t = ds.registry.tissue_targets(targets).astype(np.int64)
    tissue = dice_per_class(res.tissue, tissue_t, range(1, NUM_TISSUES), (tissue_t >= 0) & (tissue_t < NUM_TISSUES))
    row: dict[str, Any] = dict(zip(region_names(), parc.tolist(), strict=True))
    row |= dict(zip(TISSUE_NAMES, tissue.tolist(), strict=True))
    row["mean_parc"] = float(np.nanmean(parc)) if np.isfinite(parc).any() else float("nan")
    row["mean_tissue"] = float(np.nanmean(tissue)) if np.isfinite(tissue).any() else float("nan")
    return row


def _strip_row(model: nn.Module, ds: PatchDataset, index: int, card: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    from brainparc.inference import predict_brain_mask
    from brainparc.train.data import _load

    e = ds.entries[index]
    img_path, mask_path = find_file(e.path, "head"), find_file(e.path, "mask")
    if img_path is None or mask_path is None:
        return {}
    image = _load(img_path).astype(np.float32)
    target = _load(mask_path) > 0
    prob = predict_brain_mask(model, image, dict(card), **kw)  # ROI = non-zero voxels, as at run time
    d = dice_per_class((prob > 0.5).astype(np.int64), target.astype(np.int64), [1], np.ones(image.shape, bool))
    return {"brain": float(d[0]), "mean_parc": float(d[0])}


def validate(
    model: nn.Module,
    dataset: PatchDataset,
    card: Mapping[str, Any],
    *,
    device: Any = "cpu",
    amp: bool = False,
    max_subjects: int | None = None,
    overlap: float = 0.5,
) -> list[dict[str, Any]]:
    """One row per validation subject (``subject`` + Dice columns); subjects without an image are skipped.

    The model is left in eval mode on ``device`` (the trainer switches it back to training mode).
    """
    rows = []
    fn = _parc_row if dataset.task == "parc" else _strip_row
    for i, e in enumerate(dataset.entries[:max_subjects] if max_subjects else dataset.entries):
        row = fn(model, dataset, i, card, device=device, amp=amp, progress=False, overlap=overlap)
        if row:
            rows.append({"subject": f"{e.folder}/{e.subject}"} | row)
    return rows


def write_dice_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write per-subject Dice rows plus a ``mean`` row (NaN-ignoring means) as CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else ["subject"]
    mean = {"subject": "mean"}
    for c in columns[1:]:
        vals = np.array([r[c] for r in rows], dtype=np.float64)
        mean[c] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in [*rows, mean] if rows else []:
            w.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)
    return path


def plot_learning_curve(history: Sequence[Mapping[str, float]], path: str | os.PathLike[str]) -> Path:
    """PNG of the training loss per epoch and the validation mean Dice (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(epochs, [h.get("total", np.nan) for h in history], "o-", color="tab:blue", ms=3, label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    val = [(e, h) for e, h in zip(epochs, history, strict=True) if "val_mean_parc" in h]
    if val:
        ax2 = ax.twinx()
        ax2.plot([e for e, _ in val], [h["val_mean_parc"] for _, h in val], "s-", color="tab:red", label="val Dice")
        if any("val_mean_tissue" in h for _, h in val):
            tissue = [h.get("val_mean_tissue", np.nan) for _, h in val]
            ax2.plot([e for e, _ in val], tissue, "^--", color="tab:orange", label="val tissue Dice")
        ax2.set_ylabel("validation mean Dice", color="tab:red")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_title("brainparc train")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
