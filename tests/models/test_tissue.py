"""Tissue from parcels: the tissue output is the parcel probabilities summed per tissue class."""

from __future__ import annotations

import torch
from torch import nn

from brainparc import labels
from brainparc.models import TissueFromParcels


class _Cascade(nn.Module):
    """A stand-in cascade: random parcel probabilities, a tissue head that disagrees with them."""

    patch_size, valid_size = 8, 4

    def forward(self, x: torch.Tensor, parc_b: bool = True):
        parc = torch.softmax(torch.randn(x.shape[0], 107, 4, 4, 4), 1)
        tissue = torch.zeros(x.shape[0], 4, 4, 4, 4)
        tissue[:, 0] = 1.0  # "all background": what the wrapper must replace
        return None, None, tissue, None, parc, parc if parc_b else None


def test_tissue_is_the_sum_of_its_parcels():
    tissue_of = labels.dk_struct().tissue_of
    wrapped = TissueFromParcels(_Cascade(), tissue_of)
    assert (wrapped.patch_size, wrapped.valid_size) == (8, 4)  # geometry read through
    out = wrapped(torch.zeros(2, 2, 8, 8, 8))
    tissue, parc = out[2], out[4]
    torch.testing.assert_close(tissue.sum(1), torch.ones(2, 4, 4, 4))
    for t in range(4):
        torch.testing.assert_close(tissue[:, t], parc[:, torch.as_tensor(tissue_of == t)].sum(1))
