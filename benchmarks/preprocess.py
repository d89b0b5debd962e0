"""Time and peak RSS of each preprocessing step on a whole-head 1 mm T1w (default: brainchop ``t1_crop``).

Usage::

    .venv/bin/python benchmarks/preprocess.py [--input PATH] [--spacing 1.0] [--nthreads 2]

Peak RSS is sampled from /proc/self/status every 10 ms while a step runs (it includes ITK's native allocations,
which tracemalloc would miss); "delta" is that peak minus the RSS before the step.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared/data/whole_head/brainchop/t1_crop.nii.gz"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class PeakRSS:
    """Context manager sampling the process RSS in a background thread."""

    def __enter__(self):
        self.before = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--nthreads", type=int, default=2)
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.nthreads)

    import nibabel as nib
    import numpy as np

    from brainparc.preprocessing import bias_correct, conform, load_t1w, sobel_edges, strip_skull

    rows = []

    def step(name, fn):
        with PeakRSS() as p:
            out = fn()
        rows.append((name, p.seconds, p.peak, p.peak - p.before))
        return out

    img = step("load + validate", lambda: load_t1w(args.input))
    conformed = step("conform", lambda: conform(img, args.spacing))
    t1 = step("N4", lambda: bias_correct(conformed.img, nthreads=args.nthreads))
    strip = step(
        "pseudo-brain registration", lambda: strip_skull(t1, mode="force", refine=None, nthreads=args.nthreads)
    )
    step("Sobel edges", lambda: sobel_edges(strip.brain))

    print(f"input: {args.input} {img.shape} {nib.aff2axcodes(img.affine)}, zooms {img.header.get_zooms()[:3]}")
    print(f"conformed: {conformed.img.shape} at {conformed.spacing} mm, exact={conformed.transform.is_exact}")
    vox = float(np.prod(conformed.spacing))
    print(f"pseudo-brain mask: {np.asarray(strip.mask.dataobj).sum() * vox / 1e6:.2f} l ({strip.method})")
    print(f"threads: {args.nthreads}\n")
    print(f"| {'step':<26} | {'time (s)':>8} | {'peak RSS (MB)':>13} | {'delta (MB)':>10} |")
    print(f"|{'-' * 28}|{'-' * 10}:|{'-' * 15}:|{'-' * 12}:|")
    for name, sec, peak, delta in rows:
        print(f"| {name:<26} | {sec:8.2f} | {peak:13.0f} | {delta:10.0f} |")


if __name__ == "__main__":
    main()
