"""Seconds per training iteration and peak memory per preset (CPU by default). Not collected by pytest.

One iteration = :meth:`brainparc.train.loop.Trainer.train_step`: forward of a ``batch × C × P³`` patch, the cascade
(or AutoStrip) loss on phantom labels (nested spheres: WM core, two cortical parcels, CSF rim), backward, Adam(amsgrad)
step.  Each preset runs in a fresh subprocess so that peak RSS (``ru_maxrss``) figures do not mix; the first
``--warmup`` iterations are timed separately (allocator warm-up, lazy imports).

It also prints, without computing anything (``meta`` tensors), the activation memory autograd keeps for the backward
pass with and without ``--grad-checkpoint`` (:mod:`brainparc.train.memory`), plus the largest single checkpointed
block (recomputed during the backward pass), i.e. the estimate behind "brainparc-official fits a 24 GB GPU".

Usage::

    python benchmarks/train_step.py --presets brainparc-lite --iterations 3
    python benchmarks/train_step.py --presets brainparc-official --iterations 1 --warmup 0 --grad-checkpoint
    python benchmarks/train_step.py --estimate-only --presets brainparc-official autostrip-official
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PRESETS = ("brainparc-lite", "brainparc-official")


def _phantom_target(patch: int, task: str):
    import numpy as np
    import torch

    g = np.meshgrid(*[np.linspace(-1, 1, patch)] * 3, indexing="ij")
    r = np.sqrt(sum(x**2 for x in g))
    left = g[0] < 0
    lab = np.select([r < 0.3, r < 0.55, r < 0.65], [np.where(left, 91, 92), np.where(left, 1, 2), 100], 0)
    t = torch.from_numpy(lab.astype(np.int64))[None]
    return (t > 0).long() if task == "strip" else t


def _saved_bytes(net, x, per_block: bool = False) -> tuple[int, int]:
    """Bytes autograd saves for backward during ``net(x)``; with ``per_block`` also the largest outermost block's."""
    import torch

    from brainparc.train.memory import CHECKPOINTED_BLOCKS

    state = {"total": 0, "block": 0, "max_block": 0, "depth": 0}

    def pack(t):
        n = t.numel() * t.element_size()
        state["total"] += n
        if state["depth"]:
            state["block"] += n
        return t

    def pre(_m, _a):
        if state["depth"] == 0:
            state["block"] = 0
        state["depth"] += 1

    def post(_m, _a, _o):
        state["depth"] -= 1
        if state["depth"] == 0:
            state["max_block"] = max(state["max_block"], state["block"])

    handles = []
    if per_block:
        for m in net.modules():
            if type(m).__name__ in CHECKPOINTED_BLOCKS:
                handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    for h in handles:
        h.remove()
    return state["total"], state["max_block"]


def estimate(preset: str, batch: int) -> dict:
    """Activation memory (GiB) kept for backward, without/with gradient checkpointing, from meta tensors."""
    import torch

    from brainparc import models
    from brainparc.train.memory import enable_grad_checkpointing

    row = models.PRESETS[preset]
    out = {"preset": preset}
    for gc in (False, True):
        with torch.device("meta"):
            net = models.BUILDERS[row.builder](**row.kwargs).train()
            x = torch.empty(batch, net.in_channels, *(net.patch_size,) * 3)
        if gc:
            enable_grad_checkpointing(net)
        total, block = _saved_bytes(net, x, per_block=not gc)
        out["saved_gc_gib" if gc else "saved_gib"] = total / 2**30
        if not gc:
            out["largest_block_gib"] = block / 2**30
    params = sum(p.numel() for p in net.parameters())
    out["params_m"] = params / 1e6
    out["weights_grads_adam_gib"] = params * 4 * 5 / 2**30  # weights, gradients, Adam moments, amsgrad maximum
    return out


def run_one(preset: str, iterations: int, warmup: int, batch: int, nthreads: int, grad_checkpoint: bool) -> dict:
    import torch

    from brainparc import models
    from brainparc.train.labelsets import GroupRegistry
    from brainparc.train.loop import Trainer, cascade_loss_fn, strip_loss_fn
    from brainparc.train.memory import enable_grad_checkpointing

    torch.set_num_threads(nthreads)
    torch.manual_seed(0)
    net = models.build(preset)
    task = models.PRESETS[preset].card["task"]
    if grad_checkpoint:
        enable_grad_checkpointing(net)
    P, V = net.patch_size, net.valid_size
    loss = cascade_loss_fn(GroupRegistry(), V, V) if task == "parc" else strip_loss_fn(V)
    trainer = Trainer(net, loss, lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True))
    batch_ = {
        "image": torch.randn(batch, net.in_channels, P, P, P),
        "target": _phantom_target(P, task).repeat(batch, 1, 1, 1),
    }
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times = []
    for _ in range(warmup + iterations):
        t0 = time.perf_counter()
        parts = trainer.train_step(batch_)
        times.append(time.perf_counter() - t0)
    return {
        "preset": preset,
        "grad_checkpoint": grad_checkpoint,
        "batch": batch,
        "patch": P,
        "threads": nthreads,
        "warmup_s": times[:warmup],
        "s_per_it": sum(times[warmup:]) / max(iterations, 1),
        "iterations": iterations,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_before_gib": rss0,
        "loss": parts["total"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--nthreads", type=int, default=2)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--estimate-only", action="store_true", help="only the meta-tensor activation estimate")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per preset subprocess")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        r = run_one(a.one, a.iterations, a.warmup, a.batch_size, a.nthreads, a.grad_checkpoint)
        print("RESULT " + json.dumps(r))
        return 0
    print(f"{'preset':<20} {'params M':>9} {'saved GiB':>10} {'+gc GiB':>8} {'max block':>10} {'w+g+adam GiB':>13}")
    for p in a.presets:
        e = estimate(p, a.batch_size)
        print(
            f"{p:<20} {e['params_m']:9.1f} {e['saved_gib']:10.2f} {e['saved_gc_gib']:8.2f} "
            f"{e['largest_block_gib']:10.2f} {e['weights_grads_adam_gib']:13.2f}"
        )
    if a.estimate_only:
        return 0
    print(f"\n{'preset':<20} {'gc':>3} {'batch':>5} {'patch':>5} {'thr':>3} {'warm-up s':>10} {'s/it':>8} {'its':>4} "
          f"{'peak RSS GiB':>12}")  # fmt: skip
    for p in a.presets:
        cmd = [sys.executable, __file__, "--one", p, "--iterations", str(a.iterations), "--warmup", str(a.warmup)]
        cmd += ["--batch-size", str(a.batch_size), "--nthreads", str(a.nthreads)]
        cmd += ["--grad-checkpoint"] if a.grad_checkpoint else []
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            print(f"{p:<20} timed out after {a.timeout:.0f} s")
            continue
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{p:<20} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(line[7:])
        warm = ",".join(f"{w:.1f}" for w in r["warmup_s"]) or "-"
        print(
            f"{p:<20} {'y' if r['grad_checkpoint'] else 'n':>3} {r['batch']:>5} {r['patch']:>5} {r['threads']:>3} "
            f"{warm:>10} {r['s_per_it']:8.2f} {r['iterations']:>4} {r['peak_rss_gib']:12.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
