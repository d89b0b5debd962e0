"""Model tests: one intra-op thread, because these small 3-D convolutions are dominated by OpenMP synchronisation
on a 2-core runner shared with other work (measured 3–4× faster with one thread); restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
