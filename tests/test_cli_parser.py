"""The BIDS-App parser: both spellings, ``sub-``/``ses-`` tolerance, defaults within choices, guards."""

from __future__ import annotations

import argparse

import pytest

from brainparc.cli.main import EXIT_USAGE, main
from brainparc.cli.parser import get_parser, get_subcommand_parser


def _parse(*extra):
    return get_parser().parse_args(["/data", "/out", "participant", *extra])


def test_both_spellings_and_prefixes():
    a = _parse("--participant_label", "sub-01", "02", "--session-label", "ses-1")
    b = _parse("--participant-label", "01", "sub-02", "--session_label", "1")
    assert a.participant_label == b.participant_label == ["01", "02"]
    assert a.session_label == b.session_label == ["1"]


def test_invalid_label_refused():
    with pytest.raises(SystemExit):
        _parse("--participant-label", "sub-0_1")


def test_defaults_are_among_choices():
    for parser in (get_parser(), get_subcommand_parser()):
        actions = list(parser._actions)
        for sub in [a for a in actions if isinstance(a, argparse._SubParsersAction)]:
            actions += [x for p in sub.choices.values() for x in p._actions]
        for action in actions:
            if action.choices is not None and action.default not in (None, argparse.SUPPRESS):
                if not isinstance(action, argparse._SubParsersAction):
                    assert action.default in action.choices, action.dest


def test_execution_options():
    args = _parse(
        "--nprocs",
        "4",
        "--omp-nthreads",
        "2",
        "--mem",
        "8000M",
        "--plugin",
        "Linear",
        "--plugin-args",
        '{"n_procs": 2}',
        "--stop-on-first-crash",
        "--reports-only",
        "-w",
        "/tmp/w",
        "--device",
        "cuda:1",
    )
    assert (args.nprocs, args.omp_nthreads, args.plugin, args.plugin_args) == (4, 2, "Linear", {"n_procs": 2})
    assert abs(args.mem - 8000 / 1024) < 1e-9 and args.stop_on_first_crash and args.reports_only


def test_subcommands_beside_positional_form():
    args = get_subcommand_parser().parse_args(["demo", "/tmp/x", "--model", "a.safetensors"])
    assert args.command == "demo" and args.skull_strip == "auto"
    args = get_subcommand_parser().parse_args(["parcellate", "t1.nii.gz", "-o", "o"])
    assert args.command == "parcellate"


def test_output_inside_bids_is_refused(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    assert main([str(bids), str(bids / "derivatives" / "brainparc"), "participant"]) == EXIT_USAGE
    assert main([str(bids), str(bids), "participant"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is BIDS_DIR or inside it" in err and err.count("\n") == 2


def test_work_dir_default_is_next_to_output(tmp_path):
    from brainparc.cli.run import build_config

    cfg = build_config(_parse_real(tmp_path))
    assert cfg.work_dir == tmp_path / "brainparc_work"
    assert "[run]" in cfg.to_toml() and "[execution]" in cfg.to_toml()


def _parse_real(tmp_path):
    return get_parser().parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant"])


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "brainparc" in capsys.readouterr().out


@pytest.mark.parametrize(("device", "gpu_slots"), [("cpu", None), ("cuda", 1), ("cuda:1", 1)])
def test_plugin_settings(tmp_path, device, gpu_slots):
    from brainparc.cli.run import build_config, plugin_settings

    base = [str(tmp_path / "bids"), str(tmp_path / "out"), "participant"]
    args = get_parser().parse_args([*base, "--nprocs", "3", "--mem", "6G", "--device", device])
    plugin, plugin_args = plugin_settings(build_config(args))
    assert plugin == "MultiProc" and plugin_args["n_procs"] == 3 and plugin_args["memory_gb"] == 6.0
    assert plugin_args.get("n_gpu_procs") == gpu_slots
    args.plugin_args = {"n_gpu_procs": 2}
    assert plugin_settings(build_config(args))[1].get("n_gpu_procs") == 2  # the user's value wins
