"""Check the derivatives of a container run against the outputs contract (run inside the image by check.sh).

Usage: ``python3 check_outputs.py BIDS_DIR OUTPUT_DIR --container docker|singularity|none [--group]``. Prints one JSON
summary line and exits 1 listing every problem found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from brainparc.bids.derivatives import OUTPUTS, derivative_path


def check(bids_dir: Path, out_dir: Path, container: str, group: bool) -> tuple[list[str], dict]:
    """Return (problems, summary) for the derivatives of every T1w in ``bids_dir``."""
    problems: list[str] = []
    desc = json.loads((out_dir / "dataset_description.json").read_text())
    generated = desc["GeneratedBy"][0].get("Container", {})
    if container == "none" and generated:
        problems.append(f"GeneratedBy.Container is {generated} outside a container")
    elif container != "none" and (generated.get("Type") != container or not generated.get("Tag")):
        problems.append(f"GeneratedBy.Container is {generated}, expected Type {container!r} and a Tag")
    t1ws = sorted(bids_dir.glob("sub-*/**/anat/*_T1w.nii.gz"))
    if not t1ws:
        problems.append(f"no T1w under {bids_dir}")
    for t1w in t1ws:
        source = nib.load(t1w)
        for spec in OUTPUTS.values():
            path = out_dir / derivative_path(t1w, **{k: v for k, v in spec.items() if k != "dtype"})
            if not path.is_file():
                problems.append(f"missing {path}")
            elif path.name.endswith(".nii.gz"):
                img = nib.load(path)
                if img.shape != source.shape or not np.allclose(img.affine, source.affine, atol=1e-4):
                    problems.append(f"{path} is not on the input grid ({img.shape} vs {source.shape})")
    subjects = sorted({p.name.split("_")[0] for p in t1ws})
    problems += [f"missing {out_dir / s}.html" for s in subjects if not (out_dir / f"{s}.html").is_file()]
    if group:
        table = out_dir / "group" / "volumes.tsv"
        rows = table.read_text().splitlines()[1:] if table.is_file() else []
        if len(rows) != len(t1ws):
            problems.append(f"{table}: {len(rows)} rows for {len(t1ws)} T1w images")
        if not (out_dir / "group" / "report.html").is_file():
            problems.append("missing group/report.html")
    summary = {"t1w": len(t1ws), "files": sum(1 for p in out_dir.rglob("*") if p.is_file()), "container": generated}
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 when the derivatives are complete and on the input grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--container", required=True, choices=("docker", "singularity", "none"))
    parser.add_argument("--group", action="store_true", help="also check the group-level outputs")
    args = parser.parse_args(argv)
    problems, summary = check(args.bids_dir, args.output_dir, args.container, args.group)
    print(json.dumps({"ok": not problems, **summary}))
    for problem in problems:
        print(f"check_outputs: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
