"""``brainparc`` entry point: parses, dispatches, and maps failures to documented exit codes.

Exit codes (also in the README): 0 success · 1 processing failed · 2 usage error · 3 bad input data ·
4 model/weights problem. User-facing failures print one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from brainparc import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4
LOGGER = logging.getLogger("brainparc")


def _nthreads(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be ≥ 1")
    return n


def _add_parcellate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parcellate",
        help="parcellate one T1w image",
        description="Skull-strip and parcellate one T1w image; outputs are written on the input grid.",
    )
    p.add_argument("t1w", type=Path, help="T1-weighted NIfTI/MGH image")
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="default|PATH",
        help="parcellation and/or skull-stripping weights: 'default' (bundled), our .safetensors, or the official "
        "BrainParc.pth(.gz) / AutoStrip_Full.pth(.gz); repeat to give both (default: default)",
    )
    p.add_argument("--skull-strip", choices=("auto", "force", "skip"), default="auto")
    p.add_argument("--brain-mask", type=Path, default=None, help="use this brain mask instead of skull stripping")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--nthreads", type=_nthreads, default=None, help="CPU threads for torch and ANTs")
    p.add_argument("-v", "--verbose", action="count", default=0)


def get_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="brainparc", description="Unified lifespan brain parcellation (BrainParc).")
    parser.add_argument("--version", action="version", version=f"brainparc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_parcellate(subparsers)
    return parser


def _run_parcellate(args: argparse.Namespace) -> int:
    from brainparc.pipeline import ParcellateOptions, run_parcellate

    opts = ParcellateOptions(
        skull_strip=args.skull_strip,
        brain_mask=args.brain_mask,
        device=args.device,
        nthreads=args.nthreads,
    )
    result = run_parcellate(args.t1w, args.output_dir, args.model or ["default"], opts)
    print(f"brainparc: wrote {len(result.files)} files to {args.output_dir}")
    return EXIT_OK


def _exit_code(exc: BaseException) -> tuple[int, str]:
    """Map an exception to (exit code, one-line message)."""
    from brainparc.core.io import InputError
    from brainparc.models.checkpoints import CheckpointError, ModelNotFoundError

    if isinstance(exc, InputError):
        return EXIT_BAD_INPUT, f"bad input: {exc}"
    if isinstance(exc, ModelNotFoundError | CheckpointError):
        return EXIT_MODEL, f"model error: {exc}"
    if isinstance(exc, FileNotFoundError):
        return EXIT_BAD_INPUT, f"bad input: {exc}"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, str(exc)
    return EXIT_FAILED, f"processing failed: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = get_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        return _run_parcellate(args)
    except KeyboardInterrupt:
        print("brainparc: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # one line for users, the traceback with -v
        code, message = _exit_code(exc)
        if args.verbose:
            LOGGER.exception("traceback")
        print(f"brainparc: error: {message}", file=sys.stderr)
        return code
