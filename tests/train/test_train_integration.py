"""The pieces compose: seed-layout dataset → DataLoader → branch targets → cascade loss → gradients."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from brainparc.train.data import PatchDataset, seed_worker
from brainparc.train.losses import adaptive_class_weights, cascade_loss
from brainparc.train.targets import branch_targets
from tests.train.conftest import PATCH as P
from tests.train.conftest import VALID as V
from tests.train.conftest import StubCascade

torch.set_num_threads(1)


def test_dataset_to_cascade_loss(layout):
    ds = PatchDataset(layout, "train", patch_size=P, synth_ratio=0.5, seed=0)
    reg = ds.registry
    loader = DataLoader(ds, batch_size=2, shuffle=False, worker_init_fn=seed_worker, num_workers=0)
    model = StubCascade()
    G, Gt = torch.as_tensor(reg.grouping), torch.as_tensor(reg.tissue_grouping)
    tissue_of_class = torch.as_tensor(reg.tissue_of_class)
    alpha = torch.as_tensor(adaptive_class_weights([0.0] + [1 / 106] * 106), dtype=torch.float32)
    for batch in loader:
        assert batch["image"].shape == (2, 2, P, P, P)
        targets = branch_targets(batch["target"], torch.as_tensor(reg.tissue_of_group), valid_size=V, big_size=V)
        total, parts = cascade_loss(model(batch["image"]), targets, G, Gt, tissue_of_class, alpha=alpha)
        model.zero_grad()
        total.backward()
        assert torch.isfinite(total) and all(torch.isfinite(torch.tensor(v)) for v in parts.values())
        assert model.conv.weight.grad.abs().sum() > 0
