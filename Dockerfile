# brainparc BIDS App image (README "Containers and HPC", docs/hpc.md).
#
# GPU image (default): NVIDIA's CUDA 13.0 base + torch from PyPI, whose Linux x86_64 wheels are CUDA 13.0 builds
# (they require cuda-toolkit 13.0.3) that cover Hopper (sm_90: H100/H200). Needs an NVIDIA driver >= 580 on the host,
# or an older data-centre driver with CUDA forward compatibility. For older drivers pick a matching pair, e.g.
# --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#
#   DOCKER_BUILDKIT=1 docker build -t brainparc:0.1.0 .
#
# CPU image on plain Debian (torch's CPU build; what tests/container/check.sh builds locally):
#
#   DOCKER_BUILDKIT=1 docker build --build-arg BASE_IMAGE=debian:bookworm-slim \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t brainparc:0.1.0-cpu .
#
# Behind a TLS-intercepting proxy pass its CA bundle as a BuildKit secret (never copied into the image):
# --secret id=cabundle,src=/etc/ssl/certs/ca-certificates.crt. Run: docker run --rm --read-only --tmpfs /tmp ...
# (/tmp is the only place the image itself writes to: caches and configs all point there).
ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/brainparc
ENV PATH=/opt/brainparc/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# torch first (the largest layer, changes least). TORCH_INDEX_URL empty = PyPI (CUDA build); PIP_FIND_LINKS lets a
# local build take a wheel file from a local folder served over HTTP.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=
ARG PIP_FIND_LINKS=
RUN --mount=type=secret,id=cabundle --mount=type=cache,target=/root/.cache/pip \
    if [ -f /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"

# the other dependencies, read from pyproject.toml only (editing the code does not invalidate this layer), plus the
# offline BIDS validator that the participant level runs on its input when installed
COPY pyproject.toml /tmp/brainparc-pyproject.toml
RUN --mount=type=secret,id=cabundle --mount=type=cache,target=/root/.cache/pip \
    if [ -f /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/brainparc-pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt 'bids-validator-deno>=2.0' \
    && rm /tmp/brainparc-pyproject.toml /tmp/requirements.txt

# the package itself, not editable, with the bundled weights (brainparc/models/weights/*.safetensors, package data);
# the source is bind-mounted, so no copy of it stays in a layer
RUN --mount=type=bind,target=/src,rw --mount=type=secret,id=cabundle --mount=type=cache,target=/root/.cache/pip \
    if [ -f /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
    && pip install --no-deps /src \
    && pip check

# every cache and config location in /tmp: works with `docker run --read-only --tmpfs /tmp`, with Singularity's
# read-only image and with no home directory; nothing is fetched at run time
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/.config/matplotlib \
    TORCH_HOME=/tmp/.cache/torch \
    NIPYPE_CONFIG_DIR=/tmp/.config/nipype \
    NIPYPE_NO_ET=1 \
    BRAINPARC_CONTAINER=docker

# a release image must carry loadable default weights; ALLOW_MISSING_WEIGHTS=1 is for smoke-check builds only
ARG ALLOW_MISSING_WEIGHTS=0
RUN brainparc --version \
    && if python3 -c "from brainparc.pipeline import load_models; load_models(['default'])"; then :; \
       elif [ "$ALLOW_MISSING_WEIGHTS" = 1 ]; then echo "WARNING: image built without bundled default weights"; \
       else echo "bundled default weights missing (build with ALLOW_MISSING_WEIGHTS=1 for a smoke image)"; exit 1; fi

RUN useradd --uid 10001 --user-group --home-dir /tmp --no-create-home --shell /usr/sbin/nologin brainparc
USER brainparc
WORKDIR /tmp

# last, so that a new tag or commit rebuilds nothing above
ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ARG IMAGE_TAG=brainparc:${VERSION}
LABEL org.opencontainers.image.title="brainparc" \
      org.opencontainers.image.description="Unified lifespan brain parcellation (BrainParc) as a BIDS App" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/brainparc/brainparc" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.ref.name="${IMAGE_TAG}"
# recorded as GeneratedBy.Container {"Type": "docker", "Tag": ...} in the derivatives' dataset_description.json
ENV BRAINPARC_CONTAINER_TAG=${IMAGE_TAG}

ENTRYPOINT ["brainparc"]
CMD ["--help"]
