"""Static checks of the container files (no Docker needed; tests/container/check.sh builds and runs them for real)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from brainparc import __version__

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
SINGULARITY = (REPO / "Singularity.def").read_text()
SCRIPTS = [REPO / "tests" / "container" / "check.sh", REPO / "tests" / "hpc" / "slurm_localhost.sh"]


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S*)$", DOCKERFILE, re.MULTILINE)
    assert match, f"no ARG {name}= in the Dockerfile"
    return match.group(1)


def test_dockerfile_version_and_tag_follow_the_package():
    assert _arg("VERSION") == __version__
    descriptor = json.loads((REPO / "descriptors" / "brainparc.boutiques.json").read_text())
    assert _arg("IMAGE_TAG").replace("${VERSION}", _arg("VERSION")) == descriptor["container-image"]["image"]


def test_dockerfile_runtime_contract():
    assert 'ENTRYPOINT ["brainparc"]' in DOCKERFILE
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    for var in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCH_HOME", "NIPYPE_CONFIG_DIR"):
        assert re.search(rf"\b{var}=/tmp\b", DOCKERFILE), f"{var} must point into /tmp (read-only images)"
    assert "NIPYPE_NO_ET=1" in DOCKERFILE and "BRAINPARC_CONTAINER=docker" in DOCKERFILE
    assert "BRAINPARC_CONTAINER_TAG=${IMAGE_TAG}" in DOCKERFILE
    assert "pip install -e" not in DOCKERFILE and "COPY . " not in DOCKERFILE  # not editable, no source layer
    assert "/run/secrets/cabundle" in DOCKERFILE and "ca-certificates.crt /" not in DOCKERFILE  # CA never copied in


def test_dockerignore_keeps_the_weights_and_drops_the_rest():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # an allow-list: nothing reaches the build context unless named
    assert "!brainparc/models/weights/*.safetensors" in rules


def test_singularity_definition():
    assert re.search(r"^Bootstrap: docker-(archive|daemon)$", SINGULARITY, re.MULTILINE)
    for section in ("%environment", "%runscript", "%test", "%labels", "%help"):
        assert re.search(rf"^{section}$", SINGULARITY, re.MULTILINE), section
    assert 'exec brainparc "$@"' in SINGULARITY and "brainparc --version" in SINGULARITY
    assert "BRAINPARC_CONTAINER=singularity" in SINGULARITY
    for option in ("--nv", "--cleanenv", "-B "):
        assert option in SINGULARITY


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)
