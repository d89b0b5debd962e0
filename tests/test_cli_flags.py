"""fMRIPrep-compatible flags: memory with units (``--mem``) or in MB (``--mem-mb``), process vs thread counts, and
help texts that say what the options do."""

from __future__ import annotations

import argparse

import pytest

from brainparc.cli.parser import get_parser, get_subcommand_parser


def _parse(*extra):
    return get_parser().parse_args(["/data", "/out", "participant", *extra])


@pytest.mark.parametrize(
    ("flags", "gb"),
    [
        (["--mem", "16G"], 16.0),
        (["--mem", "16GB"], 16.0),
        (["--mem", "16gib"], 16.0),
        (["--mem", "8000M"], 8000 / 1024),
        (["--mem", "1T"], 1024.0),
        (["--mem-mb", "16000"], 16000 / 1024),
        (["--mem_mb", "16000"], 16000 / 1024),
        (["--mem-mb", "16G"], 16.0),  # an explicit unit is honoured
    ],
)
def test_memory_sizes(flags, gb):
    args = _parse(*flags)
    assert (args.mem or args.mem_mb) == pytest.approx(gb)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--mem", "16"], "--mem 16 is ambiguous: give a unit (16G or 16M), or use --mem-mb 16 for MB"),
        (["--mem", "16000"], "is ambiguous"),
        (["--mem-mb", "16"], "--mem-mb 16 is 16 MB, less than any run needs: did you mean 16G?"),
        (["--mem", "lots"], "invalid memory size 'lots'"),
    ],
)
def test_ambiguous_memory_is_refused_with_a_clear_error(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(*flags)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_mem_mb_is_not_read_as_gigabytes():
    # the bug: --mem_mb 16000 was an alias of --mem, where a bare number meant GB (16 TB)
    assert _parse("--mem_mb", "16000").mem_mb < 16


@pytest.mark.parametrize("flag", ["--nprocs", "--nthreads", "--n_cpus", "--n-cpus"])
def test_fmriprep_process_flags(flag):
    args = _parse(flag, "4", "--omp-nthreads", "2")
    assert (args.nprocs, args.omp_nthreads) == (4, 2)
    assert _parse("--omp_nthreads", "3").omp_nthreads == 3


def _actions(parser: argparse.ArgumentParser, command: str | None = None) -> dict[str, argparse.Action]:
    if command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[command]
    return {opt: action for action in parser._actions for opt in action.option_strings}


def test_parcellate_thread_flag_says_what_it_is():
    actions = _actions(get_subcommand_parser(), "parcellate")
    assert "threads" in actions["--omp-nthreads"].help
    # --nthreads keeps fMRIPrep's meaning (CPUs/processes), as in the BIDS App, and says how it acts here
    assert actions["--nthreads"].dest == actions["--nprocs"].dest == "nprocs"
    assert "caps --omp-nthreads" in actions["--nthreads"].help
    assert "process" in _actions(get_parser())["--nthreads"].help


def test_parcellate_threads_are_capped_by_nprocs(monkeypatch, tmp_path):
    from brainparc.cli import main as cli_main

    seen = {}

    def fake_run(t1w, outdir, models, opts):
        seen["nthreads"] = opts.nthreads
        raise KeyboardInterrupt

    monkeypatch.setattr("brainparc.pipeline.run_parcellate", fake_run)
    for flags, expected in (([], None), (["--nthreads", "3"], 3), (["--omp-nthreads", "4", "--nprocs", "2"], 2)):
        cli_main.main(["parcellate", str(tmp_path / "t1.nii.gz"), "-o", str(tmp_path / "o"), *flags])
        assert seen["nthreads"] == expected, flags


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("--skull-strip", ["auto", "background", "brain-sized", "force", "skip", "AutoStrip"]),
        ("--participant-label", ["sub-", "default"]),
        ("--session-label", ["ses-", "default"]),
        ("--bids-filter-file", ["pybids", '"t1w"', "bids_filters/"]),
        ("--skip-bids-validation", ["validator"]),
        ("--mem", ["unit"]),
        ("--mem-mb", ["MB"]),
    ],
)
def test_help_texts(option, words):
    action = _actions(get_parser())[option]
    assert action.help, option
    for word in words:
        assert word in action.help, (option, word)
    get_parser().format_help()  # every help string formats (no stray % signs)
    get_subcommand_parser().format_help()
