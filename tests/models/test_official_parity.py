"""Golden parity of the official presets with the published state dicts (reference §1.5, §1.6, §9 item 1)."""

from __future__ import annotations

import pytest
import torch

from brainparc.models import PRESETS, build
from brainparc.models.blocks import IBN
from tests.conftest import SHARED_DATA, needs_shared_data

TSV_DIR = SHARED_DATA / "brainparc"


def read_golden(name: str, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key without prefix: (shape, kind)}`` from a golden TSV (columns key, shape, numel, dtype, kind)."""
    rows = {}
    for line in (TSV_DIR / name).read_text().splitlines()[1:]:
        key, shape, _numel, _dtype, kind = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        assert key.startswith(prefix)
        rows[key[len(prefix) :]] = (dims, kind)
    return rows


@pytest.fixture(scope="module")
def brainparc_official() -> torch.nn.Module:
    return build("brainparc-official")  # ~1.1 GB: built once for the module


@pytest.fixture(scope="module")
def autostrip_official() -> torch.nn.Module:
    return build("autostrip-official")


def _assert_matches(model: torch.nn.Module, golden: dict[str, tuple[tuple[int, ...], str]]) -> None:
    state = model.state_dict()
    assert set(state) == set(golden)
    bad = [k for k, v in state.items() if tuple(v.shape) != golden[k][0]]
    assert bad == []
    params = {name for name, _ in model.named_parameters()}
    assert params == {k for k, (_, kind) in golden.items() if kind == "parameter"}


@needs_shared_data
def test_brainparc_official_keys_shapes_counts(brainparc_official: torch.nn.Module) -> None:
    golden = read_golden("official_state_dict.tsv")
    assert len(golden) == 2550
    _assert_matches(brainparc_official, golden)
    assert sum(p.numel() for p in brainparc_official.parameters()) == 279_780_824
    assert len(list(brainparc_official.parameters())) == 1497
    assert len(list(brainparc_official.buffers())) == 1053


@needs_shared_data
def test_autostrip_official_keys_shapes_counts(autostrip_official: torch.nn.Module) -> None:
    golden = read_golden("official_autostrip_state_dict.tsv", prefix="module.")
    assert len(golden) == 392
    _assert_matches(autostrip_official, golden)
    assert sum(p.numel() for p in autostrip_official.parameters()) == 31_297_016


def test_stage_parameter_counts(brainparc_official: torch.nn.Module) -> None:
    counts = {s: sum(p.numel() for p in getattr(brainparc_official, s).parameters()) for s in ("Boundary", "Tissue")}
    counts["Parc"] = sum(p.numel() for p in brainparc_official.Parc.parameters())
    assert counts == {"Boundary": 93_191_322, "Tissue": 93_193_914, "Parc": 93_395_588}


def test_autostrip_ibn_locations(autostrip_official: torch.nn.Module) -> None:
    ibn = {name.removesuffix(".bn") for name, m in autostrip_official.named_modules() if isinstance(m, IBN)}
    fusions = {f"fusion_{n}" for n in (32, 64, 128, 256)} | {f"fusion_up_{n}" for n in (256, 128, 64, 32)}
    ups = {f"up_{n}_{b}.residual.do.0" for n in (256, 128) for b in "sb"}
    assert ibn == fusions | ups


def test_official_geometry_and_quirks(brainparc_official: torch.nn.Module) -> None:
    net = brainparc_official
    assert (net.patch_size, net.valid_size, net.in_channels, net.out_channels) == (160, 96, 2, 107)
    assert net.preset == "brainparc-official"
    crops = net.Boundary.crops
    assert crops["fusion_32"] == ((10, 36), (10, 38), (10, 38))  # the anisotropic typo is reproduced
    assert crops["fusion_up_64"] == ((10, 38),) * 3
    assert crops["fusion_16"] == crops["fusion_up_32"] == ((20, 76),) * 3
    assert crops["fusion_128"] == ((3, 9),) * 3 and crops["fusion_256"] == ((1, 5),) * 3
    assert net.Tissue.crops == net.Parc.crops == crops
    assert net.Tissue.in_tr_s.trans.conv.in_channels == 5 and net.Boundary.in_tr_s.trans.conv.in_channels == 2
    assert net.Boundary.out_tr_s.head == "sigmoid" and net.Parc.out_tr_s.head == "softmax"
    up = net.Boundary.up_32_s.up
    assert up.mode == "trilinear" and up.align_corners is True
    assert net.Boundary.fusion_16.ca.fc[1].negative_slope == 0.1
    assert net.Boundary.fusion_16.act.negative_slope == 0.2
    assert isinstance(net.Boundary.down_32_s.activate1, torch.nn.ReLU)
    # one shared bottleneck per stage: a single module, 8 blocks of 256 channels
    assert len(net.Boundary.bottleneck.do) == 8


def test_autostrip_official_geometry(autostrip_official: torch.nn.Module) -> None:
    net = autostrip_official
    assert (net.patch_size, net.valid_size, net.in_channels, net.out_channels) == (160, 128, 1, 2)
    assert net.crops["fusion_32"] == ((7, 57),) * 3 and net.crops["fusion_up_32"] == ((13, 115),) * 3
    assert PRESETS["autostrip-official"].kwargs["res_depths"] == (1, 1, 2, 2)
