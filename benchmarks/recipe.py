"""Time and peak memory of one whole ``parcellate_image`` run per recipe with official-size weights. Not collected by
pytest.

Random official-size networks (``brainparc-official``, ``autostrip-official``) stand in for the downloaded files; their
cards say ``source: official``, so ``--recipe auto`` picks the reference recipe as it would for the real weights. Each
case runs in a fresh subprocess (its own ``ru_maxrss``). ``--max-windows N`` runs each network on its first N windows
only (``benchmarks/inference.py``'s ``CappedModel``); later windows reuse the last real output, so tiling, the sums,
the resampling and the clean-up all run for the whole image and the peak RSS is real; the time is extrapolated as
``measured + (windows - N) × seconds per real window``.

A random AutoStrip gives a random mask, so the skull-stripping network here is timed on its real windows but its
output is replaced by the pseudo-brain support (the dilated registered template mask): the brain mask, hence the
parcellation region, is then a little larger than a real one (memory: an upper estimate).

Usage::

    python benchmarks/recipe.py --max-windows 2                       # both cases, reference recipe
    python benchmarks/recipe.py --cases sub005 --recipe fast --max-windows 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import CappedModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "brainchop": ("whole_head/brainchop/t1_crop.nii.gz", "force"),  # 1 mm adult whole head, 256³
    "sub005": ("brainparc/sub005_adult/brain.nii.gz", "auto"),  # 1 mm adult brain, already stripped, 208×256×256
}


class SupportProxy(CappedModel):
    """AutoStrip stand-in: the real network runs (capped) for timing; the output is the input's support."""

    windows = 0

    def __call__(self, x, **kwargs):
        self.windows += x.shape[0]
        super().__call__(x, **kwargs)
        o = (self.patch_size - self.valid_size) // 2
        v = x[:, :1, o : o + self.valid_size, o : o + self.valid_size, o : o + self.valid_size]
        brain = (v > v.amin(dim=(2, 3, 4), keepdim=True) + 1e-3).float()  # min-max scaled: background is the minimum
        return self._torch.cat([1 - brain, brain], dim=1), None


def worker(case: str, recipe: str, max_windows: int | None, nthreads: int, shared: Path) -> dict:
    """One case end to end; returns its figures."""
    import torch

    from brainparc.core.io import load_t1w
    from brainparc.models import PRESETS, build
    from brainparc.pipeline import LoadedModels, ParcellateOptions, parcellate_image

    torch.manual_seed(0)
    parc = CappedModel(build("brainparc-official"), max_windows)
    strip = SupportProxy(build("autostrip-official"), max_windows)
    cards = {p: dict(PRESETS[p].card, source="official", sha256="random") for p in PRESETS if p.endswith("official")}
    models = LoadedModels(parc, cards["brainparc-official"], strip, cards["autostrip-official"])
    path, skull_strip = CASES[case]
    img = load_t1w(shared / path)
    opts = ParcellateOptions(skull_strip=skull_strip, device="cpu", nthreads=nthreads, recipe=recipe)
    start = time.perf_counter()
    out = parcellate_image(img, models, opts)
    wall = time.perf_counter() - start
    prov = out.provenance
    timings = prov["timings_s"]
    per_parc = parc.real_seconds / max(parc.real_windows, 1)
    per_strip = strip.real_seconds / max(strip.real_windows, 1)
    extra = max(prov["windows"] - parc.real_windows, 0) * per_parc
    extra += max(strip.windows - strip.real_windows, 0) * per_strip
    return {
        "case": case,
        "shape": list(img.shape),
        "recipe": prov["inference_recipe"]["name"],
        "model_grid": prov["model_grid"]["shape"],
        "parc_windows": prov["windows"],
        "parc_real_windows": parc.real_windows,
        "parc_s_per_window": round(per_parc, 1),
        "strip_windows": strip.windows,
        "strip_s_per_window": round(per_strip, 1) if strip.real_windows else None,
        "skull_strip": prov["skull_strip"]["method"],
        "timings_s": timings,
        "wall_s": round(wall, 1),
        "total_s": round(wall + extra, 1),
        "extrapolated": extra > 0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--recipe", default="auto", choices=("auto", "fast", "reference"))
    parser.add_argument("--max-windows", type=int, default=None, help="run each net on N (>= 2) windows, extrapolate")
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=SHARED, help="../shared/data")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.recipe, args.max_windows, args.nthreads, args.shared)))
        return 0
    rows = []
    for case in args.cases:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--recipe", args.recipe]
        cmd += ["--nthreads", str(args.nthreads), "--shared", str(args.shared)]
        cmd += ["--max-windows", str(args.max_windows)] if args.max_windows else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{case}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"cpu, {args.nthreads} threads, official-size random weights, recipe {args.recipe}")
    print("| case | recipe | model grid | windows (run) | s/window | AutoStrip windows | s/window | total s | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        total = f"{r['total_s']}{' (extrapolated)' if r['extrapolated'] else ''}"
        print(
            f"| {r['case']} {'×'.join(map(str, r['shape']))} | {r['recipe']} | {'×'.join(map(str, r['model_grid']))} "
            f"| {r['parc_windows']} ({r['parc_real_windows']}) | {r['parc_s_per_window']} "
            f"| {r['strip_windows'] or '-'} | {r['strip_s_per_window'] or '-'} | {total} | {r['peak_rss_mb']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
