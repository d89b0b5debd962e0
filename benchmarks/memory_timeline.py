"""Where the peak RSS of one ``benchmarks/recipe.py`` case comes from. Not collected by pytest.

Runs the same worker as ``recipe.py`` (official-size random weights, ``--max-windows`` real windows per network) with
a sampler thread that reads ``VmRSS`` every 0.2 s and keeps the main thread's stack at each new maximum; prints the
worker's JSON line, the peak with its stack, and the maximum RSS per 10 s.

Usage::

    python benchmarks/memory_timeline.py brainchop --max-windows 1
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe


def rss_mb() -> int:
    """This process's resident set size (MB) from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=list(recipe.CASES))
    parser.add_argument("--max-windows", type=int, default=1)
    parser.add_argument("--nthreads", type=int, default=1)
    args = parser.parse_args(argv)
    main_id, t0 = threading.get_ident(), time.time()
    peak: dict = {"mb": 0, "s": 0.0, "stack": ""}
    timeline: list[tuple[float, int]] = []

    def sample() -> None:
        while True:
            mb = rss_mb()
            timeline.append((time.time() - t0, mb))
            if mb > peak["mb"]:
                frame = sys._current_frames().get(main_id)
                stack = "".join(traceback.format_stack(frame)[-6:]) if frame else ""
                peak.update(mb=mb, s=time.time() - t0, stack=stack)
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    print(json.dumps(recipe.worker(args.case, "auto", args.max_windows, args.nthreads, recipe.SHARED)))
    print(f"peak {peak['mb']} MB at {peak['s']:.0f} s in\n{peak['stack']}")
    per10: dict[int, int] = {}
    for t, mb in timeline:
        per10[int(t // 10)] = max(per10.get(int(t // 10), 0), mb)
    print("max RSS MB per 10 s:", " ".join(f"{k * 10}s:{v}" for k, v in sorted(per10.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
