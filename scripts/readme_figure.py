"""Render the README figure: a parcellation by the bundled model, drawn by the report code.

    python scripts/readme_figure.py INPUT_T1W PARCELLATE_OUTPUT_DIR docs/figures/parcellation.png

``PARCELLATE_OUTPUT_DIR`` is what ``brainparc parcellate INPUT_T1W -o DIR`` wrote (e.g. ``benchmarks/evaluate.py``'s
``work/eval/sub005``); the figure is the participant report's parcellation panel (BrainParc labels in FreeSurfer's
colours on the input image).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib

from brainparc import labels
from brainparc.reports.figures import plot_overlay


def main(t1w: str, out_dir: str, png: str) -> None:
    prov = json.loads((Path(out_dir) / "provenance.json").read_text())
    model = prov["models"]["parcellation"]
    title = f"{Path(t1w).name}: {model['preset']} ({model['source']}, sha256 {model['sha256'][:12]})"
    plot_overlay(
        nib.load(t1w),
        nib.load(str(Path(out_dir) / "brainparc_dseg.nii.gz")),
        png,
        colors=[lab.color for lab in labels.dk_struct().labels],
        title=title,
    )
    print(png)


if __name__ == "__main__":
    main(*sys.argv[1:4])
