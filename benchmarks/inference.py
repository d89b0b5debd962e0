"""Time and peak memory of the real inference path per model preset (CPU or CUDA). Not collected by pytest.

Each preset runs in a fresh subprocess so that peak RSS (``ru_maxrss``) figures do not mix. Weights are random
(``brainparc.models.build``); the input is a synthetic 1 mm adult-like volume (208×256×256) with an ellipsoid brain of
~1.4 L. ``--max-windows N`` runs the network on the first N windows only and feeds the cached output of the last real
call for the others: the full accumulators and blending still run (so memory is measured for the whole volume) and
the wall time is extrapolated as ``measured + (windows - N) × mean seconds per real window``. Use N ≥ 2: the
accumulators are allocated after the first window, so only a later forward shows the true peak.

Usage::

    python benchmarks/inference.py --presets brainparc-lite autostrip-lite --nthreads 2
    python benchmarks/inference.py --presets brainparc-official --max-windows 2
    python benchmarks/inference.py --device cuda --amp     # GPU: wall time includes CUDA start-up; peak GPU memory
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ("brainparc-lite", "autostrip-lite", "brainparc-official", "autostrip-official")
SEMI_AXES_MM = (65.0, 85.0, 60.0)  # 4/3·π·65·85·60 mm³ ≈ 1.39 L


def synthetic_brain(shape: tuple[int, int, int], seed: int = 0):
    """Ellipsoid brain mask, a smooth T1-like brain (0 outside), its gradient-magnitude edge and a pseudo-brain."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    centre = [s / 2 for s in shape]
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    radius = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, SEMI_AXES_MM, strict=True))
    mask = radius < 1
    texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    intensity = np.where(mask, 400 + 300 * (1 - radius) + 2000 * texture, 0).astype(np.float32)
    edge = np.sqrt(sum(g**2 for g in np.gradient(intensity))).astype(np.float32)
    pseudo = np.where(radius < 1.15, 400 + 2000 * texture, 0).astype(np.float32)  # "T1 × dilated template mask"
    return intensity, edge, mask, pseudo


class CappedModel:
    """Wrap a network: run it for the first ``max_windows`` windows, then return the cached last output."""

    def __init__(self, model, max_windows: int | None):
        import torch

        self.model, self.max_windows = model.eval(), max_windows
        self.patch_size, self.valid_size = model.patch_size, model.valid_size
        self.real_windows, self.real_seconds, self.cache = 0, 0.0, None
        self._torch = torch

    def eval(self):
        return self

    def to(self, device):
        self.model.to(device)
        return self

    def __call__(self, x, **kwargs):
        if self.max_windows is None or self.real_windows < self.max_windows or self.cache is None:
            start = time.perf_counter()
            out = self.model(x, **kwargs)
            self.real_seconds += time.perf_counter() - start
            self.real_windows += x.shape[0]
            if self.max_windows is not None and self.real_windows >= self.max_windows:
                self.cache = out  # only from the last real call: holding outputs during forwards would inflate RSS
            return out
        return tuple(None if o is None else o[: x.shape[0]] for o in self.cache)


def worker(
    preset: str,
    nthreads: int,
    max_windows: int | None,
    batch_size: int,
    shape,
    overlap: float,
    amp: bool | None,
    device: str = "cpu",
) -> dict:
    """Run one preset end to end and return its figures."""
    import torch

    from brainparc.inference import predict_brain_mask, predict_parcellation, set_threads
    from brainparc.inference.sliding_window import plan_windows
    from brainparc.models import PRESETS, build

    set_threads(nthreads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build(preset)
    build_s = time.perf_counter() - start
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    intensity, edge, mask, pseudo = synthetic_brain(shape)
    capped = CappedModel(model, max_windows)
    cuda = device.startswith("cuda")
    if cuda:
        torch.zeros(1, device=device)  # CUDA context outside the timing
    start = time.perf_counter()
    if preset.startswith("autostrip"):
        card = {"normalisation": "minmax", **PRESETS[preset].card}
        predict_brain_mask(capped, pseudo, card, device=device, batch_size=batch_size, overlap=overlap, amp=amp)
        region, per_voxel = pseudo != 0, 2 * 4
    else:
        card = {"normalisation": "official-zscore", **PRESETS[preset].card}
        predict_parcellation(
            capped, intensity, edge, card, mask=mask, device=device, batch_size=batch_size, overlap=overlap, amp=amp
        )
        region, per_voxel = mask, 4 * 4 + 107 * 2
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    from brainparc.inference.predictor import bounding_roi, dilated_region

    roi = bounding_roi(region, 8)
    roi_voxels = math.prod(s.stop - s.start for s in roi)
    if preset.startswith("autostrip"):  # dense sums over the ROI + float32 weight sum
        accum_bytes = roi_voxels * (per_voxel + 4)
    else:  # sums on the mask dilated by the margin + weight sum + int64 column index over the ROI
        accum_bytes = int(dilated_region(region, roi, 8).sum()) * per_voxel + roi_voxels * (4 + 8)
    windows = len(
        plan_windows(shape, patch_size=model.patch_size, valid_size=model.valid_size, roi=roi, overlap=overlap)
    )
    per_window = capped.real_seconds / max(capped.real_windows, 1)
    extrapolated = wall + max(windows - capped.real_windows, 0) * per_window
    return {
        "preset": preset,
        "normalisation": card["normalisation"],
        "windows": windows,
        "real_windows": capped.real_windows,
        "build_s": round(build_s, 1),
        "s_per_window": round(per_window, 1),
        "wall_s": round(wall, 1),
        "total_s": round(extrapolated, 1),
        "extrapolated": capped.real_windows < windows,
        "weights_mb": round(weights_mb),
        "roi": [s.stop - s.start for s in roi],
        "accum_mb": round(accum_bytes / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--max-windows", type=int, default=None, help="run the net on N (>= 2) windows, extrapolate")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--shape", type=int, nargs=3, default=(208, 256, 256))
    parser.add_argument("--overlap", type=float, default=0.5, help="overlap of the valid regions (default 0.5)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on the CPU too")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        amp = True if args.amp else None
        figures = worker(
            args.worker,
            args.nthreads,
            args.max_windows,
            args.batch_size,
            tuple(args.shape),
            args.overlap,
            amp,
            args.device,
        )
        print(json.dumps(figures))
        return 0
    rows = []
    for preset in args.presets:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", preset, "--nthreads", str(args.nthreads)]
        cmd += ["--batch-size", str(args.batch_size), "--shape", *map(str, args.shape), "--overlap", str(args.overlap)]
        cmd += ["--amp"] if args.amp else []
        cmd += ["--device", args.device]
        if args.max_windows:
            cmd += ["--max-windows", str(args.max_windows)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{preset}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        f"{args.device}, {args.nthreads} threads, batch {args.batch_size}, volume {'×'.join(map(str, args.shape))}, "
        f"overlap {args.overlap}, {'bf16 autocast' if args.amp else 'fp32'}"
    )
    print("| preset | windows (run) | s/window | wall s | total s | weights MB | ROI | accum MB | RSS MB | GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        total = f"{r['total_s']}{' (extrapolated)' if r['extrapolated'] else ''}"
        print(
            f"| {r['preset']} | {r['windows']} ({r['real_windows']}) | {r['s_per_window']} | {r['wall_s']} | {total} "
            f"| {r['weights_mb']} | {'×'.join(map(str, r['roi']))} | {r['accum_mb']} | {r['peak_rss_mb']} "
            f"| {r['peak_gpu_mb'] or '-'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
