"""Dev Dice of training checkpoints on the validation fold, with the run-time inference (issue 17's convergence table).

    python benchmarks/dev_dice.py work/train_root atlas.csv work/v2/checkpoints/chk_*.pt --window 128 64 --out T.tsv

Each checkpoint is scored by :func:`brainparc.train.validate.validate` (mean Dice over the labelled regions and over
CSF/GM/WM of the ``val`` fold) at the training window or at ``--window P V`` (the same weights on a larger window, as
inference runs them). ``A.pt+B.pt+...`` scores the checkpoints' weight average
(:func:`brainparc.train.loop.average_checkpoints`). ``atlas`` instead of a checkpoint scores the atlas prior alone. Not
collected by pytest.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from brainparc import models
from brainparc.train.data import PatchDataset
from brainparc.train.loop import average_checkpoints
from brainparc.train.validate import validate


def _model(spec: str, window: tuple[int, int] | None, preset: str) -> tuple[torch.nn.Module, int | str]:
    """The model a spec names and its epoch label (``atlas``, an epoch, or ``first-last`` for an average)."""
    if spec == models.ATLAS_ONLY:
        return models.load(spec)[0], "atlas"
    row = models.PRESETS[preset]
    kwargs = dict(row.kwargs) | (dict(zip(("patch_size", "valid_size"), window, strict=True)) if window else {})
    model = models.BUILDERS[row.builder](**kwargs)
    state = average_checkpoints(spec.split("+"))
    model.load_state_dict(state["model"])
    models.attach_bundled_atlas(model)
    epochs = state["averaged_epochs"]
    return model.eval(), epochs[0] if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("file_list")
    p.add_argument("checkpoints", nargs="+", help="chk_*.pt files, or 'atlas'")
    p.add_argument("--preset", default="brainparc-atlas")
    p.add_argument("--window", type=int, nargs=2, default=None, metavar=("P", "V"))
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    card = dict(models.PRESETS[a.preset].card)
    ds = PatchDataset(a.root, "val", file_list=a.file_list, normalisation=card["normalisation"], coords=True)
    rows = []
    for spec in a.checkpoints:
        start = time.perf_counter()
        model, epoch = _model(spec, a.window, a.preset)
        rows_ = validate(model, ds, card, device="cpu", amp=True, overlap=a.overlap)
        row = {
            "weights": "+".join(Path(p).name for p in spec.split("+")),
            "epoch": epoch,
            "window": "x".join(map(str, a.window)) if a.window else "training",
            "mean_parc": round(float(np.nanmean([r["mean_parc"] for r in rows_])), 4),
            "mean_tissue": round(float(np.nanmean([r["mean_tissue"] for r in rows_])), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        with a.out.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
