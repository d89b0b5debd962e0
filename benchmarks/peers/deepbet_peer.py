"""deepbet (PyPI ``deepbet``, MIT, weights inside its wheel) as a skull-strip peer, for benchmarks only.

Runs in its own virtual environment, never brainparc's (``deepbet`` is no dependency of brainparc)::

    python3 -m venv work/deepbet-venv
    work/deepbet-venv/bin/pip install -c constraints-cpu.txt deepbet==1.0.2
    work/deepbet-venv/bin/python benchmarks/peers/deepbet_peer.py T1.nii.gz -o out/    # brain_mask.nii.gz

deepbet's own defaults: threshold 0.5, no dilation, CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

VENV = Path(__file__).resolve().parents[2] / "work" / "deepbet-venv"


def main(argv: list[str] | None = None) -> int:
    """``IN -o OUT``: writes ``OUT/brain_mask.nii.gz`` and ``OUT/provenance.json``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--nthreads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args(argv)
    import torch
    from deepbet import run_bet

    if a.nthreads:
        torch.set_num_threads(a.nthreads)
    a.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = str(a.input)
        if not src.endswith((".nii", ".nii.gz")):  # deepbet reads NIfTI only: same grid, same data
            img = nib.load(src)
            src = str(Path(tmp) / "input.nii.gz")
            nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), src)
        mask = str(a.out / "brain_mask.nii.gz")
        run_bet([src], mask_paths=[mask], threshold=0.5, n_dilate=0, no_gpu=True, skip_broken=False)
    total = time.perf_counter() - t
    from importlib.metadata import version

    prov = {"model": f"deepbet {version('deepbet')}", "source": "PyPI deepbet (MIT), benchmark only",
            "threads": torch.get_num_threads(), "timings_s": {"skullstrip": total, "total": total}}  # fmt: skip
    (a.out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
