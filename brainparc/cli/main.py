"""``brainparc`` entry point: picks the parser, dispatches, and maps failures to documented exit codes.

Forms: ``brainparc BIDS_DIR OUTPUT_DIR {participant,group} [options]`` (the BIDS App) and the subcommands
``parcellate``, ``train`` and ``demo``. Exit codes (also in the README): 0 success · 1 processing failed (any
participant) · 2 usage error (including OUTPUT_DIR inside BIDS_DIR) · 3 bad input data (not a BIDS dataset,
unknown participant, nothing selected, unreadable image) · 4 model/weights problem. User-facing failures print one
line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from brainparc.cli.logs import setup_logging
from brainparc.cli.parser import SUBCOMMANDS, get_parser, get_subcommand_parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4
LOGGER = logging.getLogger("brainparc")
_depth = 0  # commands running in this process: the demo runs the App's levels through main(), warnings stay once

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_MODEL", "EXIT_OK", "EXIT_USAGE", "get_parser", "main"]


def _run_parcellate(args: argparse.Namespace) -> int:
    from brainparc.cli.logs import show_progress
    from brainparc.pipeline import ParcellateOptions, run_parcellate

    threads = [n for n in (args.omp_nthreads, args.nprocs) if n]  # one process: --nprocs caps the threads
    opts = ParcellateOptions(
        skull_strip=args.skull_strip,
        brain_mask=args.brain_mask,
        device=args.device,
        nthreads=min(threads) if threads else None,
        progress=show_progress(args.quiet),
        recipe=args.recipe,
    )
    result = run_parcellate(args.t1w, args.output_dir, args.model or ["default"], opts)
    print(f"brainparc: wrote {len(result.files)} files to {args.output_dir}")
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from brainparc.demo import run_demo

    return run_demo(
        args.outdir,
        models=args.model or ["default"],
        skull_strip=args.skull_strip,
        device=args.device,
        nprocs=args.nprocs,
        omp_nthreads=args.omp_nthreads,
        resolution=args.resolution,
        verbosity=["-v"] * args.verbose + (["--quiet"] if args.quiet else []),
    )


def _run_bids_app(args: argparse.Namespace) -> int:
    from brainparc.cli.run import build_config, run_bids_app

    return run_bids_app(build_config(args))


def _exit_code(exc: BaseException) -> tuple[int, str]:
    """Map an exception to (exit code, one-line message)."""
    from brainparc.bids.layout import BIDSError
    from brainparc.cli.run import UsageError
    from brainparc.core.io import InputError

    if isinstance(exc, UsageError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, InputError | BIDSError):
        return EXIT_BAD_INPUT, f"bad input: {exc}"
    if type(exc).__name__ in ("ModelNotFoundError", "CheckpointError"):  # no torch import just to compare
        return EXIT_MODEL, f"model error: {exc}"
    if isinstance(exc, FileNotFoundError):
        return EXIT_BAD_INPUT, f"bad input: {exc}"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, str(exc)
    return EXIT_FAILED, f"processing failed: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        parser = get_subcommand_parser(with_train=argv[0] == "train")
    elif not argv or argv[0] in ("-h", "--help", "--version"):
        parser = get_parser()
        if not argv:
            parser.print_usage(sys.stderr)
            return EXIT_USAGE
    else:
        parser = get_parser()
    args = parser.parse_args(argv)  # argparse exits with 2 on usage errors (SystemExit)
    if getattr(args, "command", None) == "train":
        from brainparc.train.cli import run_train

        return run_train(args)
    global _depth
    setup_logging(args.verbose, args.quiet, keep_seen=_depth > 0)
    runner = {"parcellate": _run_parcellate, "demo": _run_demo}.get(getattr(args, "command", None), _run_bids_app)
    _depth += 1
    try:
        return runner(args)
    except KeyboardInterrupt:
        print("brainparc: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # one line for users, the traceback with -v
        code, message = _exit_code(exc)
        if args.verbose:
            LOGGER.exception("traceback")
        print(f"brainparc: error: {message}", file=sys.stderr)
        return code
    finally:
        _depth -= 1
