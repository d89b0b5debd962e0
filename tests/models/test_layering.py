"""``import brainparc.models`` stays free of nipype and pybids."""

from __future__ import annotations

import subprocess
import sys


def test_models_import_is_light() -> None:
    code = "import sys, brainparc.models; print(sorted(m for m in ('nipype', 'bids') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
