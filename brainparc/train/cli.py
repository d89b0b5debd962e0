"""The ``brainparc train`` subcommand: ``train parc``, ``train strip`` and ``train prepare``.

``brainparc.cli.main`` registers it with :func:`add_train_parser` and dispatches to :func:`run_train`; :func:`main`
runs it standalone (same exit codes as ``brainparc``: 0 success, 1 failed, 2 usage, 3 bad input data, 4 model).

Multi-GPU / multi-node::

    torchrun --nproc_per_node 4 -m brainparc train parc --data ROOT --out DIR --preset brainparc-official --amp
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m brainparc train parc ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainparc.train.config import DEVICES_HELP, PRESET_CHOICES, TrainConfig, TrainUsageError, load_config_file

__all__ = ["add_train_parser", "config_from_args", "main", "run_train"]

# the values of brainparc.cli.main (not imported: that module imports this one)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4
LOGGER = logging.getLogger("brainparc.train")
_NOT_OPTIONS = ("command", "train_task", "verbose", "config")


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be ≥ 1")
    return n


def _ratio(value: str) -> float:
    x = float(value)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError("must lie in [0, 1]")
    return x


def _add_fit_parser(sub: argparse._SubParsersAction, task: str) -> None:
    what = "the BrainParc cascade (parcellation)" if task == "parc" else "AutoStrip (skull stripping)"
    p = sub.add_parser(task, help=f"train {what}", description=f"Train {what} on a seed-layout data root.")
    S = argparse.SUPPRESS  # unset options stay unset, so the config file can supply them
    d = TrainConfig(task=task, data="", out="")
    p.add_argument("--data", type=Path, default=S, metavar="ROOT", help="seed layout root (ROOT/data, ROOT/csvfile)")
    p.add_argument("--out", type=Path, default=S, metavar="DIR", help="run folder (checkpoints, logs, weights)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE", help="JSON or TOML file with the same keys")
    p.add_argument("--file-list", default=S, help=f"file list in ROOT/csvfile (default: {d.file_list})")
    p.add_argument("--preset", choices=PRESET_CHOICES[task], default=S, help=f"network (default: {d.preset})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_positive_int, default=S, help="epochs (one patch per subject; default 100)")
    budget.add_argument("--iterations", type=_positive_int, default=S, help="optimiser steps instead of epochs")
    p.add_argument("--batch-size", type=_positive_int, default=S, help=f"patches per rank (default: {d.batch_size})")
    p.add_argument("--lr", type=float, default=S, help=f"base learning rate (default: {d.lr}; reference schedule)")
    p.add_argument("--resume", default=S, metavar="auto|PATH", help="auto: newest DIR/checkpoints/chk_*.pt")
    p.add_argument("--device", default=S, help=f"{DEVICES_HELP} (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=S, help="bf16 autocast (CUDA, bf16 CPUs)")
    p.add_argument("--num-workers", type=int, default=S,
                   help="DataLoader workers per rank (default: sized from the CPUs and memory, logged)")  # fmt: skip
    p.add_argument("--seed", type=int, default=S, help=f"seed of data and initialisation (default: {d.seed})")
    p.add_argument("--synth-ratio", type=_ratio, default=S, help=f"synthetic-image share (default: {d.synth_ratio})")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=S, help="augment real images (on)")
    p.add_argument("--patch-size", type=_positive_int, default=S, help="window edge (with --valid-size; smoke runs)")
    p.add_argument("--valid-size", type=_positive_int, default=S, help="small-branch edge (multiple of 16)")
    p.add_argument("--val-every", type=int, default=S, help=f"validate every N epochs, 0 = never ({d.val_every})")
    p.add_argument("--val-max-subjects", type=_positive_int, default=S, help="validate on the first N subjects")
    p.add_argument("--save-every", type=int, default=S, help=f"checkpoint every N epochs (default: {d.save_every})")
    p.add_argument("--keep-checkpoints", type=_positive_int, default=S, help="newest checkpoints kept (default: 3)")
    p.add_argument("--grad-checkpoint", action=argparse.BooleanOptionalAction, default=S, help="save GPU memory")
    p.add_argument("--grad-clip", type=float, default=S, help="clip the gradient norm (default: off)")
    p.add_argument("--max-non-finite", type=int, default=S, metavar="N",
                   help="non-finite losses or gradients taken as zero-gradient steps (0: first stops)")  # fmt: skip
    p.add_argument("--foreground-prob", type=_ratio, default=S, help="patch centres in the brain (default: 0.9)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=S, help="progress bar (on)")
    p.add_argument("--patches-per-subject", type=_positive_int, default=S, help="patches per subject and epoch (1)")
    p.add_argument("--init", default=S, metavar="WEIGHTS", help="fine-tune from these weights (same architecture)")
    p.add_argument("--time-limit", type=float, default=S, metavar="SECONDS", help="stop after this much training")
    p.add_argument(
        "--lr-final-from",
        type=int,
        default=S,
        metavar="EPOCH",
        help="learning rate 0.1 x --lr from this epoch on (the reference schedule's last step, due at epoch 200)",
    )
    if task == "parc":
        p.add_argument(
            "--coord-noise",
            type=float,
            default=S,
            metavar="VOXELS",
            help="atlas-guided presets: displace the template coordinates of training patches by a smooth random "
            "field, std up to this many voxels (a registration error; default 0)",
        )
    if task == "strip":
        p.add_argument(
            "--pseudo-brain-prob", type=_ratio, default=S, help="synthetic heads shown as pseudo-brains (0.8)"
        )
    p.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks on errors; -vv: debug log")


def _add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    from brainparc.train.prepare import LABELS_HELP

    p = sub.add_parser(
        "prepare",
        help="convert BIDS + aparc+aseg labels into the seed layout",
        description="Convert a BIDS dataset and FreeSurfer-style aparc+aseg label maps into a training data root.",
        epilog=LABELS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bids_dir", type=Path, help="BIDS dataset with sub-*/[ses-*/]anat/*_T1w.nii[.gz]")
    p.add_argument("labels_dir", type=Path, help="aparc+aseg label maps in FreeSurfer ids (naming below)")
    p.add_argument("root", type=Path, help="data root to create or extend (ROOT/data/<folder>, ROOT/csvfile)")
    p.add_argument("--folder", default=None, help="dataset folder name in ROOT/data (default: the BIDS folder name)")
    p.add_argument("--val-fraction", type=_ratio, default=0.2, help="share of subjects in fold 2 (default 0.2)")
    p.add_argument("--test-fraction", type=_ratio, default=0.0, help="share of subjects in fold 1 (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--n4", action=argparse.BooleanOptionalAction, default=True, help="N4 as at run time (on)")
    p.add_argument("--participant-label", nargs="+", default=None, help="only these subjects (with or without sub-)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks on errors; -vv: debug log")


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` (with ``parc``, ``strip``, ``prepare``) on the top-level subparsers; returns its parser."""
    p = subparsers.add_parser(
        "train",
        help="train BrainParc/AutoStrip networks, or prepare training data",
        description="Train the parcellation cascade or AutoStrip (also under torchrun), or prepare a data root.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks on errors; -vv: debug log")
    sub = p.add_subparsers(dest="train_task", metavar="{parc,strip,prepare}")
    _add_fit_parser(sub, "parc")
    _add_fit_parser(sub, "strip")
    _add_prepare_parser(sub)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the run configuration: defaults < ``--config`` file < command-line options."""
    file_values = load_config_file(args.config) if getattr(args, "config", None) else {}
    cli = {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS}
    return TrainConfig.from_sources(args.train_task, file_values, cli)


def _exit_code(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message; a ValueError is a usage error only while the configuration is built."""
    from brainparc.models.checkpoints import CheckpointError, ModelNotFoundError
    from brainparc.train.config import TrainUsageError
    from brainparc.train.run import TrainDataError

    if isinstance(exc, TrainUsageError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, TrainDataError):
        return EXIT_BAD_INPUT, f"bad training data: {exc}"
    if isinstance(exc, ModelNotFoundError | CheckpointError):
        return EXIT_MODEL, f"model error: {exc}"
    if isinstance(exc, FileNotFoundError):
        return EXIT_BAD_INPUT, f"bad input: {exc}"
    return EXIT_FAILED, f"training failed: {type(exc).__name__}: {exc}"


def run_train(args: argparse.Namespace) -> int:
    """Run ``brainparc train …`` from parsed arguments; returns the exit code (one-line errors on stderr)."""
    if not logging.getLogger().handlers:  # console log when called from brainparc.cli.main (the file log is separate)
        level = logging.DEBUG if getattr(args, "verbose", 0) > 1 else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    task = getattr(args, "train_task", None)
    if task is None:
        print("brainparc train: choose parc, strip or prepare (see brainparc train --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if task == "prepare":
            from brainparc.train.prepare import prepare_dataset

            rows = prepare_dataset(
                args.bids_dir,
                args.labels_dir,
                args.root,
                folder=args.folder,
                val_fraction=args.val_fraction,
                test_fraction=args.test_fraction,
                seed=args.seed,
                n4=args.n4,
                participants=args.participant_label,
            )
            print(f"brainparc: prepared {len(rows)} subject(s) in {args.root}")
            return EXIT_OK
        from brainparc.train.run import run_training

        try:
            cfg = config_from_args(args)
        except ValueError as err:
            raise TrainUsageError(str(err)) from err
        summary = run_training(cfg)
        if summary.get("is_main", True):
            print(f"brainparc: trained to epoch {summary['epochs']} ({summary['steps']} steps): {summary['weights']}")
        return EXIT_OK
    except KeyboardInterrupt:
        print("brainparc: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # one line for users, the traceback with -v
        code, message = _exit_code(exc)
        if args.verbose or code == EXIT_FAILED:
            LOGGER.exception("traceback")
        print(f"brainparc: error: {message}", file=sys.stderr)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``brainparc.train.cli.main(["train", "parc", ...])``), the same as ``brainparc train``."""
    parser = argparse.ArgumentParser(prog="brainparc")
    add_train_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args: Any = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_train(args)
