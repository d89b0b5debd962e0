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
RECIPES = ("auto", "fast", "reference")  # brainparc.inference.recipes.RECIPE_CHOICES (not imported: it needs torch)


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


_MEM_UNITS = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}
#: Below this many MB a memory limit is refused as a probable unit mistake (``--mem-mb 16`` meaning 16 GB).
MIN_MEM_MB = 256


def _memory(value: str, default_unit: str | None, flag: str) -> float:
    """A memory size in GB from ``16G``, ``16GB``, ``16000M``, ``16000MB`` (binary units; ``default_unit`` for
    bare numbers, ``None`` refuses them)."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in _MEM_UNITS else None
    number = text[:-1] if unit else text
    try:
        amount = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid memory size {value!r} for {flag} (e.g. 16G or 16000M)") from None
    if unit is None:
        if default_unit is None:
            raise argparse.ArgumentTypeError(
                f"{flag} {value} is ambiguous: give a unit ({value}G or {value}M), or use --mem-mb {value} for MB"
            )
        unit = default_unit
    gb = amount * _MEM_UNITS[unit]
    if gb * 1024 < MIN_MEM_MB:
        raise argparse.ArgumentTypeError(
            f"{flag} {value} is {gb * 1024:g} MB, less than any run needs: did you mean {number}G?"
        )
    return gb


def mem_with_unit(value: str) -> float:
    """``--mem``: a size with a unit suffix (``16G``, ``16000M``, ``1T``) → GB; a bare number is refused.

    >>> mem_with_unit("16G"), mem_with_unit("8000MB")
    (16.0, 7.8125)
    """
    return _memory(value, None, "--mem")


def mem_mb(value: str) -> float:
    """``--mem-mb`` / ``--mem_mb``: megabytes (fMRIPrep's meaning; a unit suffix is honoured) → GB.

    >>> mem_mb("16000"), mem_mb("16G")
    (15.625, 16.0)
    """
    return _memory(value, "M", "--mem-mb")


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
        metavar="default|atlas|PATH",
        help="parcellation and/or skull-stripping weights: 'default' (bundled), 'atlas' (no parcellation network: "
        "the registered DK-struct atlas alone, a fast floor), our .safetensors, or the official "
        "BrainParc.pth(.gz) / AutoStrip_Full.pth(.gz); repeat to give both (default: default)",
    )
    p.add_argument(
        "--skull-strip",
        "--skull_strip",
        choices=SKULL_STRIP,
        default=skull_strip_default,
        help="auto (default): decide per image. An image counts as already skull-stripped when at least 20 %% of its "
        "voxels are one constant background touching every border, its non-background part is brain-sized "
        "(< 2.6 l) and the 6-15 mm under its surface has few dark voxels (where a head has skull and CSF); such an "
        "image is used as it is (its non-zero support is the mask), every other is stripped. force: always strip "
        "(template registration, then the AutoStrip network). skip: never strip (the input must be a brain).",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="auto",
        help="inference recipe around the networks: 'reference' reproduces the published BrainParc/AutoStrip "
        "scripts, 'fast' is ours (default auto: reference for the official weights, fast otherwise)",
    )


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
    g.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        type=_label("sub-"),
        default=None,
        metavar="LABEL",
        help="process these participants only (with or without 'sub-'; default: every participant in BIDS_DIR)",
    )
    g.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        type=_label("ses-"),
        default=None,
        metavar="LABEL",
        help="process these sessions only (with or without 'ses-'; default: every session)",
    )
    g.add_argument(
        "--bids-filter-file",
        "--bids_filter_file",
        type=Path,
        default=None,
        metavar="FILE",
        help='JSON file of pybids entity filters for the T1w images, under the key "t1w", e.g. '
        '{"t1w": {"acquisition": "mprage", "run": 1}} (examples in bids_filters/)',
    )
    g.add_argument("--bids-database-dir", type=Path, default=None, help="pybids database folder (big datasets)")
    g.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        help="do not run the BIDS validator on BIDS_DIR first (each image is still checked when it is read: "
        "unreadable, 4-D, empty or NaN images fail on their own, the others go on)",
    )
    g = p.add_argument_group("processing")
    _add_model_options(g)
    g.add_argument("--reports-only", action="store_true", help="only (re)write the reports from OUTPUT_DIR")
    g = p.add_argument_group("execution")
    g.add_argument("-w", "--work-dir", type=Path, default=None, help="nipype cache; reuse it to resume")
    _add_cpu_options(g, "maximum number of parallel processes (nipype workers; default: all CPUs)")
    mem = g.add_mutually_exclusive_group()
    mem.add_argument(
        "--mem", type=mem_with_unit, default=None, metavar="SIZE", help="memory limit with a unit: 16G, 16000M"
    )
    mem.add_argument("--mem-mb", "--mem_mb", type=mem_mb, default=None, metavar="MB", help="memory limit in MB")
    g.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="nipype execution plugin")
    g.add_argument("--plugin-args", type=_json_dict, default=None, metavar="JSON|FILE", help="plugin arguments")
    g.add_argument("--stop-on-first-crash", action="store_true")
    g.add_argument("--write-graph", action="store_true", help="write the workflow graph (needs graphviz)")
    _add_verbosity(g)
    return p


def _add_cpu_options(p: argparse._ActionsContainer, nprocs_help: str) -> None:
    """fMRIPrep's CPU flags: ``--nprocs/--nthreads/--n_cpus`` processes, ``--omp-nthreads`` threads per process."""
    p.add_argument(
        "--nprocs",
        "--nthreads",
        "--n_cpus",
        "--n-cpus",
        dest="nprocs",
        type=positive_int,
        default=None,
        metavar="N",
        help=nprocs_help,
    )
    p.add_argument(
        "--omp-nthreads",
        "--omp_nthreads",
        dest="omp_nthreads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads per process (torch, ANTs/ITK)",
    )


def _add_verbosity(p: argparse._ActionsContainer) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and results; no progress bars")


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
    _add_cpu_options(
        p, "CPUs to use (fMRIPrep's meaning; this command is one process, so it caps --omp-nthreads; default: all)"
    )
    _add_verbosity(p)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build a tiny BIDS dataset and run participant + group on it",
        description="Build a 2-subject BIDS dataset from nilearn's bundled MNI152 template (no download) in "
        "OUTDIR/bids, run the participant and group levels into OUTDIR/derivatives, print the report paths.",
    )
    p.add_argument("outdir", type=Path)
    _add_model_options(p)  # auto: the demo images are stripped and detected as such (no registration)
    _add_cpu_options(p, "maximum number of parallel processes (default: all CPUs)")
    p.add_argument("--resolution", type=float, default=2.0, help="voxel size (mm) of the demo images (default 2)")
    _add_verbosity(p)


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
