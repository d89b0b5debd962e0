"""Command-line parsers: the BIDS-App positional form and the ``parcellate`` / ``train`` / ``demo`` subcommands.

``brainparc BIDS_DIR OUTPUT_DIR {participant,group} [options]`` is the BIDS Apps contract; the subcommands live
beside it. :func:`brainparc.cli.main.main` picks the parser from the first argument, so a BIDS folder that
happens to be called ``demo`` must be given as ``./demo``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainparc import __version__

SUBCOMMANDS = ("parcellate", "train", "demo")
PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph", "SGE", "SGEGraph", "PBS", "PBSGraph", "LSF", "Condor")
SKULL_STRIP = ("auto", "force", "skip")


def positive_int(value: str) -> int:
    """An integer ≥ 1 (argparse type)."""
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be ≥ 1")
    return n


def _label(prefix: str):
    def parse(value: str) -> str:
        label = value[len(prefix) :] if value.startswith(prefix) else value
        if not label or not label.replace("-", "").isalnum() or "-" in label:
            raise argparse.ArgumentTypeError(f"invalid label {value!r} (letters and digits only)")
        return label

    return parse


def _mem_gb(value: str) -> float:
    """``--mem 8``, ``8G``, ``8GB``, ``8000M``/``MB`` → GB."""
    v = value.strip().upper().removesuffix("B")
    scale = 1.0 / 1024 if v.endswith("M") else 1.0
    try:
        gb = float(v.rstrip("MG")) * scale
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid memory {value!r} (e.g. 8, 8G, 8000M)") from exc
    if gb <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return gb


def _json_dict(value: str) -> dict:
    """``--plugin-args`` as inline JSON or a JSON file."""
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return data


def _add_model_options(p: argparse.ArgumentParser, skull_strip_default: str = "auto") -> None:
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="default|PATH",
        help="parcellation and/or skull-stripping weights: 'default' (bundled), our .safetensors, or the official "
        "BrainParc.pth(.gz) / AutoStrip_Full.pth(.gz); repeat to give both (default: default)",
    )
    p.add_argument("--skull-strip", "--skull_strip", choices=SKULL_STRIP, default=skull_strip_default)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def get_parser() -> argparse.ArgumentParser:
    """The BIDS-App parser: ``brainparc BIDS_DIR OUTPUT_DIR {participant,group} [options]``."""
    p = argparse.ArgumentParser(
        prog="brainparc",
        description="BrainParc lifespan brain parcellation as a BIDS App. Other commands: "
        "'brainparc parcellate T1W -o DIR' (one image), 'brainparc train ...', 'brainparc demo OUTDIR'.",
    )
    p.add_argument("--version", action="version", version=f"brainparc {__version__}")
    p.add_argument("bids_dir", type=Path, help="the input BIDS dataset (never written to; may be read-only)")
    p.add_argument("output_dir", type=Path, help="the derivatives folder (must not be inside BIDS_DIR)")
    p.add_argument("analysis_level", choices=("participant", "group"), help="processing stage")
    g = p.add_argument_group("selecting data")
    g.add_argument("--participant-label", "--participant_label", nargs="+", type=_label("sub-"), default=None)
    g.add_argument("--session-label", "--session_label", nargs="+", type=_label("ses-"), default=None)
    g.add_argument("--bids-filter-file", "--bids_filter_file", type=Path, default=None, metavar="FILE")
    g.add_argument("--bids-database-dir", type=Path, default=None, help="pybids database folder (big datasets)")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true")
    g = p.add_argument_group("processing")
    _add_model_options(g)
    g.add_argument("--reports-only", action="store_true", help="only (re)write the reports from OUTPUT_DIR")
    g = p.add_argument_group("execution")
    g.add_argument("-w", "--work-dir", type=Path, default=None, help="nipype cache; reuse it to resume")
    g.add_argument("--nprocs", "--nthreads", "--n-cpus", type=positive_int, default=None, help="parallel processes")
    g.add_argument("--omp-nthreads", type=positive_int, default=None, help="threads per process (torch, ANTs)")
    g.add_argument("--mem", "--mem-gb", "--mem_mb", type=_mem_gb, default=None, help="memory limit, e.g. 16G")
    g.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="nipype execution plugin")
    g.add_argument("--plugin-args", type=_json_dict, default=None, metavar="JSON|FILE", help="plugin arguments")
    g.add_argument("--stop-on-first-crash", action="store_true")
    g.add_argument("--write-graph", action="store_true", help="write the workflow graph (needs graphviz)")
    g.add_argument("-v", "--verbose", action="count", default=0)
    return p


def _add_parcellate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parcellate",
        help="parcellate one T1w image",
        description="Skull-strip and parcellate one T1w image; outputs are written on the input grid.",
    )
    p.add_argument("t1w", type=Path, help="T1-weighted NIfTI/MGH image")
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="output folder (created if needed)")
    _add_model_options(p)
    p.add_argument("--brain-mask", type=Path, default=None, help="use this brain mask instead of skull stripping")
    p.add_argument("--nthreads", type=positive_int, default=None, help="CPU threads for torch and ANTs")
    p.add_argument("-v", "--verbose", action="count", default=0)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build a tiny BIDS dataset and run participant + group on it",
        description="Build a 2-subject BIDS dataset from nilearn's bundled MNI152 template (no download) in "
        "OUTDIR/bids, run the participant and group levels into OUTDIR/derivatives, print the report paths.",
    )
    p.add_argument("outdir", type=Path)
    _add_model_options(p)  # auto: the demo images are stripped and detected as such (no registration)
    p.add_argument("--nprocs", type=positive_int, default=None)
    p.add_argument("--omp-nthreads", type=positive_int, default=None)
    p.add_argument("--resolution", type=float, default=2.0, help="voxel size (mm) of the demo images (default 2)")
    p.add_argument("-v", "--verbose", action="count", default=0)


def get_subcommand_parser(with_train: bool = False) -> argparse.ArgumentParser:
    """The parser of the subcommands (``train`` is registered only when asked, as it is heavier to import)."""
    p = argparse.ArgumentParser(prog="brainparc", description="Unified lifespan brain parcellation (BrainParc).")
    p.add_argument("--version", action="version", version=f"brainparc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_parcellate(sub)
    _add_demo(sub)
    if with_train:
        from brainparc.train.cli import add_train_parser

        add_train_parser(sub)
    return p
