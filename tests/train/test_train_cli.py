"""``brainparc train``: arguments, config files, exit codes, exact resume through the CLI, torchrun, parcellate."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brainparc.train.cli import add_train_parser, config_from_args, main
from brainparc.train.config import PRESET_CHOICES, TrainConfig
from tests.train.conftest import make_full_layout

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
# 32³ windows, 16³ valid region: the brainparc-tiny architecture at a CI-sized geometry
SMALL = ["--preset", "brainparc-tiny", "--patch-size", "32", "--valid-size", "16", "--device", "cpu"]
FAST = ["--num-workers", "0", "--no-progress", "--seed", "3"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="brainparc")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "parc", "--data", str(data), "--out", str(out), *SMALL, *FAST, *extra])


def test_defaults_are_among_choices():
    for task, presets in PRESET_CHOICES.items():
        cfg = TrainConfig(task=task, data="d", out="o")
        assert cfg.preset in presets and cfg.epochs == 100 and cfg.iterations is None
    args = _parse(["train", "parc", "--data", "d", "--out", "o"])
    cfg = config_from_args(args)
    assert (cfg.preset, cfg.batch_size, cfg.lr, cfg.synth_ratio, cfg.file_list) == (
        "brainparc-lite",
        2,
        1e-3,
        0.5,
        "file_list.csv",
    )
    assert config_from_args(_parse(["train", "strip", "--data", "d", "--out", "o"])).preset == "autostrip-lite"
    args = _parse("train parc --data d --out o --file-list csvfile/x.csv".split())
    assert config_from_args(args).file_list == "x.csv"


@pytest.mark.parametrize(
    "argv",
    [
        "train parc --data d --out o --epochs 2 --iterations 3",
        "train parc --data d --out o --preset autostrip-lite",
        "train parc --data d --out o --synth-ratio 1.5",
        "train parc --data d --out o --batch-size 0",
    ],
)
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv.split())
    assert exc.value.code == 2


def test_config_file_then_command_line(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('data = "ROOT"\nout = "OUT"\nepochs = 5\nbatch-size = 1\nsynth_ratio = 0.25\n')
    cfg = config_from_args(_parse(["train", "parc", "--config", str(toml), "--epochs", "2"]))
    assert (cfg.data, cfg.out, cfg.epochs, cfg.batch_size, cfg.synth_ratio) == ("ROOT", "OUT", 2, 1, 0.25)
    js = tmp_path / "train.json"
    js.write_text(json.dumps({"data": "R", "out": "O", "iterations": 7, "amp": True}))
    cfg = config_from_args(_parse(["train", "parc", "--config", str(js)]))
    assert cfg.iterations == 7 and cfg.epochs is None and cfg.amp
    assert TrainConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg  # config.json round-trips


def test_config_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": "R", "out": "O", "epoch": 3}))
    assert main(["train", "parc", "--config", str(bad)]) == 2
    assert "unknown training option 'epoch'" in capsys.readouterr().err
    assert main(["train", "parc", "--out", "O"]) == 2  # no --data anywhere
    assert main(["train"]) == 2


def test_bad_data_root_exit_3(tmp_path, capsys):
    assert _train(tmp_path / "missing", tmp_path / "out") == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data root not found" in err and str(tmp_path / "missing") in err
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "out") == 3
    assert "csvfile/file_list.csv not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_bad_device_exit_2(tmp_path, capsys):
    make_full_layout(tmp_path / "data", n_train=2, n_val=0)
    code = main(["train", "parc", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"), "--device", "tpu"])
    assert code == 2 and "--device must be" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted 3-epoch run and a 2-epoch run resumed (``--resume auto``) to 3 epochs."""
    root = tmp_path_factory.mktemp("train_cli")
    data = make_full_layout(root / "data", n_train=4, n_val=1)
    assert _train(data, root / "full", "--epochs", "3", "--val-every", "3") == 0
    assert _train(data, root / "part", "--epochs", "2", "--val-every", "0") == 0
    assert _train(data, root / "part", "--epochs", "3", "--val-every", "3", "--resume", "auto") == 0
    return {"data": data, "full": root / "full", "part": root / "part"}


def test_cli_resume_equals_uninterrupted_run(trained):
    from safetensors.torch import load_file

    a = load_file(trained["full"] / "model.safetensors")
    b = load_file(trained["part"] / "model.safetensors")
    assert a.keys() == b.keys()
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert diff <= 1e-6, diff  # measured: 0.0 (bit-identical on CPU)
    ha = json.loads((trained["full"] / "config.json").read_text())
    assert ha["epochs"] == 3 and json.loads((trained["part"] / "config.json").read_text())["resume"] == "auto"
    hist_a = (trained["full"] / "history.csv").read_text().splitlines()
    hist_b = (trained["part"] / "history.csv").read_text().splitlines()
    assert hist_a == hist_b and len(hist_a) == 4  # header + 3 epochs, validation at epoch 3 included


def test_run_outputs(trained):
    full = trained["full"]
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["chk_1.pt", "chk_2.pt", "chk_3.pt"]
    assert (full / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    dice = (full / "validation" / "dice_0003.csv").read_text().splitlines()
    header = dice[0].split(",")
    assert header[:2] == ["subject", "Precentral_L"] and "CSF" in header  # region 100 (CSF) is a region column too
    assert header[-5:] == ["tissue_CSF", "tissue_GM", "tissue_WM", "mean_parc", "mean_tissue"]
    assert [r.split(",")[0] for r in dice[1:]] == ["HCP/s4", "mean"]
    assert (full / "best.safetensors").is_file()
    log = (full / "train.log").read_text()
    assert "epoch 2:" in log and "validation: mean Dice" in log and "weights written" in log
    from brainparc import models

    net, card = models.load(full / "model.safetensors")
    assert card["preset"] == "brainparc-tiny" and net.patch_size == 32 and card["training"]["epochs"] == 3
    assert len(card["training"]["class_weights"]["alpha"]) == 107 and card["training"]["config"]["seed"] == 3


def test_exported_weights_run_in_parcellate(trained, tmp_path):
    import nibabel as nib

    from brainparc import labels
    from brainparc.cli.main import main as brainparc_main

    shape = (34, 36, 32)  # small (≥ 32 per axis, the pipeline minimum): few 16³ windows
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((g**2).sum(0))
    data = np.where(r < 0.45, 150.0, np.where(r < 0.75, 100.0, np.where(r < 0.9, 40.0, 0.0))).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "sub-01_T1w.nii.gz")
    out = tmp_path / "out"
    argv = ["parcellate", str(tmp_path / "sub-01_T1w.nii.gz"), "-o", str(out), "--skull-strip", "skip"]
    code = brainparc_main([*argv, "--model", str(trained["full"] / "model.safetensors"), "--device", "cpu"])
    assert code == 0
    parc = nib.load(out / "aparcaseg_dseg.nii.gz")
    values = set(np.unique(np.asarray(parc.dataobj)).tolist())
    assert parc.shape == shape and values <= set(labels.dk_struct().freesurfer_ids.tolist())


def _torchrun(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)} | (env_extra or {})
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "brainparc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun not installed")
def test_torchrun_two_ranks_gloo(tmp_path):
    data = make_full_layout(tmp_path / "data", n_train=8, n_val=1)
    out = tmp_path / "out"
    argv = ["train", "parc", "--data", str(data), "--out", str(out), *SMALL, *FAST]
    proc = _torchrun([*argv, "--iterations", "2", "--batch-size", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 8 subjects / 2 ranks / batch 2 = 2 steps: one epoch, one checkpoint, one log, one final message
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["chk_1.pt"]
    assert sorted(p.name for p in out.glob("*.log")) == ["train.log"]
    assert proc.stdout.count("brainparc: trained to epoch 1 (2 steps)") == 1
    state = torch.load(out / "checkpoints" / "chk_1.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2)
    card = json.loads((out / "config.json").read_text())
    assert card["iterations"] == 2
    assert "world size 2" in (out / "train.log").read_text()


def test_through_the_brainparc_entry_point(tmp_path, capsys):
    from brainparc.cli.main import main as brainparc_main

    with pytest.raises(SystemExit) as exc:
        brainparc_main(["train", "parc", "--help"])
    assert exc.value.code == 0 and "--synth-ratio" in capsys.readouterr().out
    code = brainparc_main(["train", "parc", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 3 and "data root not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        brainparc_main(["train", "parc", "--data", "d", "--out", "o", "--preset", "nope"])
    assert exc.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun not installed")
def test_torchrun_resume_equals_uninterrupted(tmp_path):
    """2 ranks: 2 epochs in one go == 1 epoch, then ``--resume auto`` to 2 (measured: bit-identical)."""
    from safetensors.torch import load_file

    data = make_full_layout(tmp_path / "data", n_train=8, n_val=1)
    base = ["train", "parc", "--data", str(data), *SMALL, *FAST, "--batch-size", "2", "--val-every", "0"]
    for out, extra in [
        ("a", ["--epochs", "2"]),
        ("b", ["--epochs", "1"]),
        ("b", ["--epochs", "2", "--resume", "auto"]),
    ]:
        proc = _torchrun([*base, "--out", str(tmp_path / out), *extra])
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
