"""``brainparc`` entry point: dispatches the BIDS-App form and the subcommands.

Exit codes (documented in the README):
0 success · 1 a participant/image failed · 2 usage error · 3 bad input data · 4 model/weights problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from brainparc import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4


def get_parser() -> argparse.ArgumentParser:
    """Build the top-level parser."""
    parser = argparse.ArgumentParser(prog="brainparc", description="Unified lifespan brain parcellation (BrainParc).")
    parser.add_argument("--version", action="version", version=f"brainparc {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    get_parser().parse_args(argv)
    return EXIT_OK
