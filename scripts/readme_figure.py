"""Render the README figure: a parcellation by the bundled model, drawn by the report code.

    python scripts/readme_figure.py INPUT_T1W PARCELLATE_OUTPUT_DIR docs/figures/parcellation.png

``PARCELLATE_OUTPUT_DIR`` is what ``brainparc parcellate INPUT_T1W -o DIR`` wrote (e.g. ``benchmarks/evaluate.py``'s
``work/eval/sub005``); the figure is the participant report's parcellation panel (BrainParc labels in the report's
colours on the input image, with its legend of the labels present).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from brainparc import labels
from brainparc.reports.figures import legend_groups, parcellation_colors, plot_overlay


def main(t1w: str, out_dir: str, png: str) -> None:
    prov = json.loads((Path(out_dir) / "provenance.json").read_text())
    model = prov["models"]["parcellation"]
    title = f"{Path(t1w).name}: {model['preset']} ({model['source']}, sha256 {model['sha256'][:12]})"
    parc = nib.load(str(Path(out_dir) / "brainparc_dseg.nii.gz"))
    table = labels.dk_struct()
    colors = parcellation_colors(table)
    present = np.unique(np.asarray(parc.dataobj))
    title += f"; status: {model.get('status') or 'not recorded'}"
    plot_overlay(nib.load(t1w), parc, png, colors=colors, title=title, legend=legend_groups(present, table, colors))
    print(png)


if __name__ == "__main__":
    main(*sys.argv[1:4])
