"""Overfit one real subject of each label declaration and look at the answer (issue 17: why did v1 collapse?).

    python benchmarks/overfit_declarations.py work/train_root --steps 300 --out work/overfit

For each declaration (Mindboggle ``dkt31_aseg`` on a real image, BrainParc ``full`` on a real image, SynthSeg ``aseg``
on an image synthesised from its labels) one fixed window is cut from one training subject and a small plain
cascade (``brainparc-tiny`` widths, no atlas: the label machinery alone) is trained on that single batch. If the
declarations, the partial-label grouping and the class mapping are right, the prediction converges to the labels:
the share of labelled voxels whose predicted class lies in their target group (``group_accuracy``) goes to ~1, and
the picture shows the same structures in the same colours, left on the left. A collapse (one class per hemisphere,
cortex as CSF) would show here in minutes. Writes ``OUT/<declaration>.png`` and ``OUT/overfit.tsv``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from brainparc.models import PRESETS
from brainparc.models.brainparc_net import BrainParcNet
from brainparc.train.data import PatchDataset
from brainparc.train.loop import cascade_loss_fn

CASES = (("dkt31_aseg", "MB", "atlas_1", 0.0), ("full", "BP", "sub003_infant_adult_like", 0.0),
         ("aseg", "SS", "training_seg_01", 1.0))  # fmt: skip
PATCH, VALID = 64, 48


def _batch(root: Path, folder: str, subject: str, synth: float, tmp: Path) -> tuple[PatchDataset, dict]:
    """One fixed patch of one subject, centred on its labelled brain's centroid (both hemispheres, deep grey)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "csvfile").mkdir(exist_ok=True)
    (tmp / "csvfile" / "one.csv").write_text(f"IDs,folder,fold\n{subject},{folder},3\n", encoding="utf-8")
    data = tmp / "data"
    if not data.exists():
        data.symlink_to((root / "data").resolve())
    ds = PatchDataset(tmp, "train", file_list="one.csv", patch_size=PATCH, normalisation="in-mask-zscore", seed=3)
    vol = ds.load_subject(0)
    centre = [round(float(c.mean())) for c in np.nonzero(vol["targets"] > 0)]
    gen = ds.generator(0)
    image, target = ds._synthetic_patch(0, vol, centre, gen) if synth else ds._real_patch(vol, centre, gen)
    return ds, {"image": image, "target": target}


def _picture(image: np.ndarray, target: np.ndarray, pred: np.ndarray, grouping: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from brainparc import labels
    from brainparc.reports.figures import parcellation_colors

    colours = np.array([to_rgb(c) for c in parcellation_colors(labels.dk_struct())])
    z = target.shape[2] // 2
    single = np.where((target >= 0) & (target < grouping.shape[1]), target, -1)
    shown = [("image", image[..., z], None), ("target (single classes; merged groups grey)", single[..., z], True),
             ("prediction", pred[..., z], True)]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (title, arr, labelled) in zip(axes, shown, strict=True):
        if labelled:
            rgb = np.where(arr[..., None] >= 0, colours[np.clip(arr, 0, None)], 0.5)
            ax.imshow(np.rot90(rgb), interpolation="nearest")
        else:
            ax.imshow(np.rot90(arr), cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{path.stem}: axial slice of the overfitted window (image left = subject left)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(root: Path, out: Path, steps: int) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for decl, folder, subject, synth in CASES:
        ds, item = _batch(root, folder, subject, synth, out / f"root_{decl}")
        kwargs = dict(PRESETS["brainparc-tiny"].kwargs) | {"patch_size": PATCH, "valid_size": VALID}
        model = BrainParcNet(**kwargs)
        loss_fn = cascade_loss_fn(ds.registry, VALID, VALID)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        x, y = item["image"][None], item["target"][None]
        start, first = time.perf_counter(), None
        for _ in range(steps):
            total, _ = loss_fn(model(x), {"target": y})
            opt.zero_grad()
            total.backward()
            opt.step()
            first = float(total.detach()) if first is None else first
        model.eval()
        with torch.no_grad():
            parc = model(x, parc_b=False)[4][0].argmax(0).numpy()
        m = (PATCH - VALID) // 2
        target = y[0, m : m + VALID, m : m + VALID, m : m + VALID].numpy()
        grouping = ds.registry.grouping
        known = target >= 0
        hit = grouping[target[known], parc[known]] > 0
        row = {"declaration": decl, "subject": f"{folder}/{subject}", "steps": steps,
               "loss_first": round(first, 3), "loss_last": round(float(total.detach()), 3),
               "group_accuracy": round(float(hit.mean()), 4),
               "classes_in_target": len(np.unique(target[(target > 0) & (target < grouping.shape[1])])),
               "classes_predicted": len(np.unique(parc[parc > 0])),
               "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        rows.append(row)
        print(row, flush=True)
        window = x[0, 0, m : m + VALID, m : m + VALID, m : m + VALID].numpy()
        _picture(window, target, parc, grouping, out / f"{decl}.png")
    with (out / "overfit.tsv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="training root of scripts/build_training_root.py")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path("work/overfit"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    run(a.root, a.out, a.steps)


if __name__ == "__main__":
    main()
