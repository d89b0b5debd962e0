"""Weight files: official .pth(.gz) reading, safetensors + card round trips, unsafe pickles, missing bundles."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import brainparc.models as models
from brainparc.models import CheckpointError, ModelNotFoundError, build, load, save
from brainparc.models.checkpoints import (
    CARD_KEY,
    check_state_dict,
    infer_official_preset,
    read_official_state_dict,
    write_safetensors,
)


def _write_official(state: dict[str, torch.Tensor], path: Path, real_gzip: bool) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = gzip.compress(buf.getvalue(), compresslevel=1) if real_gzip else buf.getvalue()
    path.write_bytes(data)
    return path


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def autostrip_official_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {f"module.{k}": v for k, v in build("autostrip-official").state_dict().items()}


@pytest.mark.parametrize("real_gzip", [True, False])
def test_official_autostrip_file_round_trip(tmp_path, autostrip_official_state, real_gzip: bool) -> None:
    path = _write_official(autostrip_official_state, tmp_path / "AutoStrip_Full.pth.gz", real_gzip)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") is real_gzip
    model, card = load(path)
    expected = {k.removeprefix("module."): v for k, v in autostrip_official_state.items()}
    _assert_same_state(model.state_dict(), expected)
    assert not model.training and model.preset == "autostrip-official"
    assert card["preset"] == "autostrip-official" and card["task"] == "strip" and card["source"] == "official"
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_official_brainparc_state_dict_in_memory() -> None:
    # The 1.1 GB file is not written: key inference and strict loading are checked on the state dict itself.
    with torch.device("meta"):
        state = build("brainparc-official").state_dict()
    assert infer_official_preset(state) == "brainparc-official"
    assert infer_official_preset(k.removeprefix("Boundary.") for k in state if k.startswith("Boundary.")) == (
        "autostrip-official"
    )
    with torch.device("meta"):
        target = build("brainparc-official")
    check_state_dict(target, state)
    broken = dict(state)
    del broken["Parc.out_tr_s.conv2.bias"]
    broken["Parc.extra.weight"] = torch.zeros(1, device="meta")
    broken["Tissue.in_tr_s.trans.conv.weight"] = torch.zeros(16, 2, 3, 3, 3, device="meta")
    with pytest.raises(CheckpointError) as info:
        check_state_dict(target, broken)
    message = str(info.value)
    assert "Parc.out_tr_s.conv2.bias" in message and "Parc.extra.weight" in message
    assert "Tissue.in_tr_s.trans.conv.weight" in message and "(16, 2, 3, 3, 3)" in message


def test_official_brainparc_file_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole file path for a cascade checkpoint, with the official row swapped for the tiny one (cheap).
    monkeypatch.setitem(models.PRESETS, "brainparc-official", models.PRESETS["brainparc-tiny"])
    torch.manual_seed(2)
    source = build("brainparc-tiny").eval()
    path = _write_official(source.state_dict(), tmp_path / "BrainParc.pth.gz", real_gzip=False)
    model, card = load(path)
    assert card["preset"] == "brainparc-official" and card["task"] == "parc" and card["labels"] == "dk_struct"
    _assert_same_state(model.state_dict(), source.state_dict())


def test_official_mismatch_is_a_clear_error(tmp_path, autostrip_official_state) -> None:
    state = dict(autostrip_official_state)
    state.pop("module.out_tr_s.conv2.bias")
    path = _write_official(state, tmp_path / "bad.pth", real_gzip=False)
    with pytest.raises(CheckpointError, match=r"1 missing: out_tr_s\.conv2\.bias"):
        load(path)


class _Payload:
    """Unpickling this object creates a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["torch-zip", "raw-pickle", "gzip"])
def test_code_executing_pickle_is_refused(tmp_path, kind: str) -> None:
    marker = tmp_path / "PWNED"
    evil = {"in_tr_s.trans.conv.weight": torch.zeros(1), "x": _Payload(marker)}
    raw = pickle.dumps(evil)
    pickle.loads(raw)  # the payload is real: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pth.gz"
    if kind == "torch-zip":
        torch.save(evil, path)
    elif kind == "raw-pickle":
        path.write_bytes(raw)
    else:
        buf = io.BytesIO()
        torch.save(evil, buf)
        path.write_bytes(gzip.compress(buf.getvalue()))
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load(path)
    assert not marker.exists()


def test_unreadable_files(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError):
        load(junk)
    fake_gz = tmp_path / "trunc.pth.gz"
    fake_gz.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(CheckpointError):
        read_official_state_dict(fake_gz)
    nested = tmp_path / "nested.pth"
    torch.save({"a": {"b": 1}}, nested)
    with pytest.raises(CheckpointError, match="state dict"):
        load(nested)


@pytest.fixture(scope="module")
def tiny_strip() -> torch.nn.Module:
    torch.manual_seed(3)
    net = build("autostrip-tiny")
    with torch.no_grad():  # non-trivial BN statistics so that eval-mode outputs depend on every buffer
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_safetensors_round_trip_fp32(tmp_path, tiny_strip) -> None:
    path = tmp_path / "strip.safetensors"
    written = save(tiny_strip, path, spacing_mm=1.0, training={"epochs": 3, "data": "synthetic"})
    model, card = load(path)
    _assert_same_state(model.state_dict(), tiny_strip.state_dict())
    x = torch.randn(1, 1, 80, 80, 80)
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(model(x), tiny_strip(x), strict=True))
    for key in ("preset", "task", "spacing_mm", "normalisation", "labels", "version", "training", "sha256", "source"):
        assert key in card
    assert card["preset"] == "autostrip-tiny" and card["task"] == "strip" and card["source"] == "file"
    assert card["training"] == {"epochs": 3, "data": "synthetic"} and card["dtype"] == "float32"
    assert card["sha256"] == written["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.preset == "autostrip-tiny" and (model.patch_size, model.valid_size) == (80, 64)


def test_safetensors_fp16_and_header(tmp_path, tiny_strip) -> None:
    from safetensors import safe_open

    path = tmp_path / "strip16.safetensors"
    save(tiny_strip, path, dtype=torch.float16, normalisation="in-mask-zscore")
    with safe_open(str(path), framework="pt") as fh:
        header_card = json.loads(fh.metadata()[CARD_KEY])
        assert fh.get_tensor("fusion_32.conv.weight").dtype == torch.float16
        assert fh.get_tensor("fusion_32.bn.BN.num_batches_tracked").dtype == torch.int64
    assert header_card["dtype"] == "float16" and header_card["arch"]["builder"] == "AutoStripNet"
    model, card = load(path)
    assert card["normalisation"] == "in-mask-zscore"
    for key, value in tiny_strip.state_dict().items():
        loaded = model.state_dict()[key]
        assert loaded.dtype == value.dtype  # cast back to float32
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(loaded, expected)
    save(tiny_strip, tmp_path / "strip32.safetensors")
    assert path.stat().st_size < 0.7 * (tmp_path / "strip32.safetensors").stat().st_size


def test_save_validates_card(tmp_path, tiny_strip) -> None:
    with pytest.raises(ValueError, match="normalisation"):
        save(tiny_strip, tmp_path / "x.safetensors", normalisation="whatever")
    assert not (tmp_path / "x.safetensors").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch, tiny_strip) -> None:
    path = tmp_path / "w.safetensors"
    save(tiny_strip, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors(tiny_strip.state_dict(), path, {"preset": "autostrip-tiny"})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_safetensors_without_card_is_rejected(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="model card"):
        load(path)


def test_missing_bundled_weights_message(no_bundled_weights) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        load("default")
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "No bundled weights" in message and "--model PATH" in message and "BrainParc.pth.gz" in message
    with pytest.raises(ModelNotFoundError, match="brainparc-atlas"):
        load("brainparc-atlas")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        load(tmp_path / "nowhere" / "BrainParc.pth.gz")
