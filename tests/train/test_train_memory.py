"""Gradient checkpointing: same gradients and BN statistics, same state-dict keys, fewer saved activations."""

from __future__ import annotations

import copy

import pytest
import torch

from brainparc.models.autostrip_net import AutoStripNet
from brainparc.models.brainparc_net import BrainParcNet
from brainparc.train.memory import enable_grad_checkpointing

torch.set_num_threads(1)
TINY = dict(widths=(2, 4, 4, 8, 8), res_depths=(1, 1, 1, 1), patch_size=32, valid_size=16)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BrainParcNet(**TINY, bottleneck_depth=1, head_kernel_size=1, head_hidden=8),
        lambda: AutoStripNet(in_channels=1, **(TINY | {"patch_size": 48, "valid_size": 32})),  # IBN: ≥ 2³ at depth
    ],
    ids=["cascade", "autostrip"],
)
def test_checkpointing_is_exact(make):
    torch.manual_seed(0)
    plain = make().train()
    ckpt = copy.deepcopy(plain)
    n = enable_grad_checkpointing(ckpt)
    assert n > 0 and enable_grad_checkpointing(ckpt) == 0  # idempotent
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, plain.in_channels, *(plain.patch_size,) * 3)
    for net in (plain, ckpt):
        out = net(x)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in out).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # running stats updated once, not twice
    with torch.no_grad():  # inference bypasses the checkpoint
        torch.testing.assert_close(plain.eval()(x)[0], ckpt.eval()(x)[0])


def test_checkpointing_saves_activation_memory():
    torch.manual_seed(0)
    net = BrainParcNet(**TINY, bottleneck_depth=1, head_kernel_size=1, head_hidden=8).train()
    x = torch.randn(2, 2, 32, 32, 32)

    def saved_bytes(model):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        return total

    before = saved_bytes(net)
    enable_grad_checkpointing(net)
    after = saved_bytes(net)
    assert after < 0.5 * before, (after, before)
