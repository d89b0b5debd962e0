"""Fit the per-class log-offsets of a trained atlas-guided checkpoint on training windows (brainparc.train.calibrate).

    python scripts/calibrate_offsets.py work/v2/checkpoints/chk_60.pt work/train_root atlas.csv \
        --windows 8 --out work/v2/calibration.json

Fits on windows of the training fold (no augmentation), then reports the pooled window Dice of the validation fold
with and without the offsets (the dev check; the evaluation cases are never read). The JSON goes into the card with
``scripts/export_weights.py --calibration``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from brainparc import models
from brainparc.train.calibrate import collect_log_probs, fit_class_offsets, pooled_dice
from brainparc.train.data import PatchDataset


def _windows(ds: PatchDataset, per_subject: int, seed: int) -> list[dict]:
    """``per_subject`` windows of every subject of ``ds`` (its own foreground sampling), reproducibly."""
    items = []
    for epoch in range(per_subject):
        ds.set_epoch(seed + epoch)
        items += [ds[i] for i in range(len(ds.entries))]
    return items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("root", type=Path)
    p.add_argument("file_list")
    p.add_argument("--preset", default="brainparc-atlas")
    p.add_argument("--windows", type=int, default=8, help="windows per training subject")
    p.add_argument("--dev-windows", type=int, default=24, help="windows of the validation subject(s)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    start = time.perf_counter()
    row = models.PRESETS[a.preset]
    model = models.BUILDERS[row.builder](**row.kwargs)
    model.load_state_dict(torch.load(a.checkpoint, map_location="cpu", weights_only=True)["model"])
    models.attach_bundled_atlas(model)
    model.eval()
    norm, v = row.card["normalisation"], model.valid_size
    common = dict(file_list=a.file_list, normalisation=norm, coords=True, patch_size=model.patch_size)
    train = PatchDataset(a.root, "train", **common)
    val = PatchDataset(a.root, "val", registry=train.registry, **common)
    logp, groups = collect_log_probs(model, _windows(train, a.windows, 1000), v)
    calib = fit_class_offsets(logp, groups, train.registry.grouping)
    grouping = np.asarray(train.registry.grouping)
    class_of_group = np.where(grouping.sum(1) == 1, grouping.argmax(1), -1)
    dev_logp, dev_groups = collect_log_probs(model, _windows(val, a.dev_windows, 2000), v)
    before = pooled_dice(dev_logp, dev_groups, class_of_group)
    after = pooled_dice(dev_logp, dev_groups, class_of_group, calib.offsets)
    result = {
        "class_log_offsets": [round(float(x), 4) for x in calib.offsets],
        "fitted_on": f"{len(train.entries)} training subjects of {a.file_list}, {a.windows} windows each, "
        f"every 2nd valid voxel ({calib.voxels} voxels), checkpoint {a.checkpoint.name}",
        "nll_before": round(calib.nll_before, 4),
        "nll_after": round(calib.nll_after, 4),
        "dev_window_dice": {
            "subjects": [e.subject for e in val.entries],
            "windows": a.dev_windows,
            "without": round(before, 4),
            "with": round(after, 4),
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    a.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "class_log_offsets"}, indent=1))


if __name__ == "__main__":
    main()
