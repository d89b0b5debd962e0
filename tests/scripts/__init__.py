"""Tests of the project's own ``scripts/`` (imported from their files: ``scripts`` is not a package)."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> types.ModuleType:
    """Import ``scripts/<name>.py`` as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
