#!/usr/bin/env bash
# Build the brainparc image on a local Debian base and check it read-only and offline, then as a Singularity image.
#
#   bash tests/container/check.sh [--model PATH]... [--keep] [--no-sif]
#
# Steps (each timed; a summary table ends the run and is saved as WORK/summary.tsv):
#   1. a Docker engine: the running one (DOCKER_HOST), else a private dockerd started here (root; --bridge=none)
#   2. the base image: BASE_IMAGE if present, else a debootstrapped Debian bookworm (minbase) imported locally
#   3. docker build of ./Dockerfile (BuildKit; CPU torch from a local wheel folder when it holds one, else from
#      PyTorch's CPU index), image size
#   4. docker run --read-only --network none --tmpfs /tmp: --version; participant and group on the demo dataset
#      (mounted read-only) with the output and work dirs as the only writable mounts; the derivatives are checked
#      against the outputs contract (check_outputs.py); the input is byte-identical afterwards; `docker diff` of
#      each container is empty and nothing appeared in WORK beside the mounted dirs
#   5. the SIF from Singularity.def (docker save + apptainer build), then `--version` and the participant level with
#      --containall --no-home (apptainer from PATH, else from a debootstrapped Debian unstable rootfs under podman)
#
# Weights: the bundled defaults when brainparc/models/weights/ holds them; else every --model PATH (or the
# space-separated paths in BRAINPARC_CHECK_MODELS) is mounted read-only and passed on; with neither, random-init
# brainparc-tiny/autostrip-tiny weights are made inside the image: a SMOKE CHECK of the container, not of accuracy.
#
# Environment: BASE_IMAGE (default localhost/debian:bookworm-minbase), DEBIAN_MIRROR, TORCH_WHEEL_DIR (a folder
# with torch-<version>+cpu wheels, served on 127.0.0.1:BRAINPARC_CHECK_WHEEL_PORT during the build; default: pip's
# find-links), TORCH_INDEX_URL (else; default PyTorch's CPU index), BRAINPARC_CHECK_STATE (persistent: dockerd data
# and build cache, the apptainer rootfs; default /var/tmp/brainparc-check), BRAINPARC_CHECK_DIR (this run's files;
# default a new temp dir, removed after a passing run unless --keep).
# Needs root (or docker access plus apptainer), network for the build, ~8 GB of disk. Exit 0 only if all passed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${BRAINPARC_CHECK_STATE:-/var/tmp/brainparc-check}
WORK=${BRAINPARC_CHECK_DIR:-$(mktemp -d /tmp/brainparc-check.XXXXXX)}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm-minbase}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=$(sed -n 's/^torch==//p' "$REPO/constraints-cpu.txt")
IMAGE=brainparc:check
read -r -a MODELS <<<"${BRAINPARC_CHECK_MODELS:-}"
KEEP=0
SIF=1
BUILD_OPTS=()
while [ $# -gt 0 ]; do
    case $1 in
        --model) MODELS+=("$2"); shift 2 ;;
        --model=*) MODELS+=("${1#--model=}"); shift ;;
        --keep) KEEP=1; shift ;;
        --no-sif) SIF=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$STATE" "$WORK"
chmod 0755 "$WORK"  # the containers' unprivileged users reach their mounts through it
SUMMARY=$WORK/summary.tsv
printf 'step\tseconds\tresult\n' >"$SUMMARY"
CLEANUP=()
cleanup() {
    local rc=$? pid
    for pid in "${CLEANUP[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 0 ] && [ $rc = 0 ]; then rm -rf "$WORK"; else echo "check.sh: kept $WORK (logs in logs/)" >&2; fi
}
trap cleanup EXIT

log() { echo "check.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
# step NAME CMD...: run CMD (its output also goes to WORK/logs/), record its wall time and result in the summary
step() {
    local name=$1 start end rc=0
    shift
    log "== $name"
    mkdir -p "$WORK/logs"
    start=$(date +%s%N)
    set +e  # (set -e inside: a failing line of a function step fails the step; `cmd || rc=$?` would disable that)
    (set -e; "$@") 2>&1 | tee -a "$WORK/logs/${name//[^A-Za-z0-9]/_}.log" >&2
    rc=${PIPESTATUS[0]}
    set -e
    end=$(date +%s%N)
    printf '%s\t%s\t%s\n' "$name" "$(awk "BEGIN { printf \"%.1f\", ($end - $start) / 1e9 }")" \
        "$([ "$rc" = 0 ] && echo ok || echo "FAILED ($rc)")" >>"$SUMMARY"
    [ "$rc" = 0 ] || die "$name (exit $rc)"
}

# -- 1. engine and a BuildKit-capable client -------------------------------------------------------------------------
start_dockerd() {
    if [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null; then die "no Docker engine reachable, cannot start one"; fi
    local root=$STATE/docker
    mkdir -p "$root"
    export DOCKER_HOST=unix://$root/docker.sock
    # --bridge=none: containers get no network interface beyond loopback (builds use --network host)
    dockerd --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/dockerd.pid" -H "$DOCKER_HOST" \
        --bridge=none --iptables=false >"$root/dockerd.log" 2>&1 &
    CLEANUP+=($!)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
    die "dockerd did not start (see $root/dockerd.log)"
}
docker info >/dev/null 2>&1 || start_dockerd
# `docker build` needs BuildKit (secrets, cache and bind mounts): buildx, or a client older than 23 with its built-in
DOCKER=
for client in docker /usr/bin/docker; do
    command -v "$client" >/dev/null || continue
    if "$client" buildx version >/dev/null 2>&1 || [ "$("$client" version -f '{{.Client.Version}}' | cut -d. -f1)" -lt 23 ]
    then DOCKER=$client; break; fi
done
[ -n "$DOCKER" ] || die "no docker client with BuildKit (install docker-buildx)"
export DOCKER_BUILDKIT=1
log "engine $("$DOCKER" version -f '{{.Server.Version}}'), client $DOCKER"

# -- 2. base image -----------------------------------------------------------------------------------------------------
make_base() {
    local rootfs=$STATE/rootfs-bookworm
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$STATE/debootstrap-bookworm.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE"
    rm -rf "$rootfs"
}
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then step "base image (debootstrap)" make_base; fi

# -- 3. build ----------------------------------------------------------------------------------------------------------
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VCS_REF=$(git -C "$REPO" rev-parse --short HEAD)"
    --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --build-arg "IMAGE_TAG=$IMAGE")
WHEELS=${TORCH_WHEEL_DIR:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
    PORT=${BRAINPARC_CHECK_WHEEL_PORT:-47291}  # fixed: the URL is a build argument, part of the layer cache key
    python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WHEELS" >"$WORK/wheels-http.log" 2>&1 &
    CLEANUP+=($!)
    BUILD_ARGS+=(--build-arg "TORCH_SPEC=torch==$TORCH_VERSION+cpu" --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$PORT/")
    log "CPU torch from $WHEELS (served on 127.0.0.1:$PORT during the build)"
else
    BUILD_ARGS+=(--build-arg "TORCH_SPEC=torch==$TORCH_VERSION"
        --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}")
fi
CA=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA" ] && BUILD_ARGS+=(--secret "id=cabundle,src=$CA")
if ! compgen -G "$REPO/brainparc/models/weights/*.safetensors" >/dev/null; then
    BUILD_ARGS+=(--build-arg ALLOW_MISSING_WEIGHTS=1)
    BUNDLED=0
else
    BUNDLED=1
fi
step "docker build" "$DOCKER" build --network host "${BUILD_ARGS[@]}" -t "$IMAGE" "$REPO"
SIZE=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
printf 'image size\t-\t%s MB (%s)\n' "$((SIZE / 1000000))" "$IMAGE" >>"$SUMMARY"

# -- 4. read-only, offline runs ------------------------------------------------------------------------------------------
RUN=("$DOCKER" run --read-only --network none --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
    --cpu-shares 512)
AS_ME=(--user "$(id -u):$(id -g)")
mkdir -p "$WORK/data" "$WORK/models"
step "demo dataset (built by the image)" "${RUN[@]}" --rm "${AS_ME[@]}" -v "$WORK/data:/data" --entrypoint python3 \
    "$IMAGE" -c "from brainparc.demo import build_demo_dataset; build_demo_dataset('/data/bids')"
BIDS=$WORK/data/bids
MODEL_ARGS=() BINDS=()  # BINDS: host:container pairs, mounted read-only
for i in "${!MODELS[@]}"; do
    path=$(realpath "${MODELS[$i]}")
    BINDS+=("$path:/models/$i-$(basename "$path")")
    MODEL_ARGS+=(--model "/models/$i-$(basename "$path")")
done
if [ ${#MODELS[@]} = 0 ] && [ $BUNDLED = 0 ]; then
    log "SMOKE CHECK: no bundled weights and no --model: random-init tiny networks (outputs are not meaningful)"
    step "random smoke weights" "${RUN[@]}" --rm "${AS_ME[@]}" -v "$WORK/models:/models" --entrypoint python3 "$IMAGE" \
        -c "from brainparc.models import build, save
save(build('brainparc-tiny'), '/models/parc-smoke.safetensors', preset='brainparc-tiny', spacing_mm=3.0,
     training={'smoke': True})
save(build('autostrip-tiny'), '/models/strip-smoke.safetensors', preset='autostrip-tiny', training={'smoke': True})"
    BINDS=("$WORK/models:/models")
    MODEL_ARGS=(--model /models/parc-smoke.safetensors --model /models/strip-smoke.safetensors)
    printf 'weights\t-\trandom-init tiny (SMOKE CHECK, not accuracy)\n' >>"$SUMMARY"
fi

checksums() { (cd "$BIDS" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
checksums >"$STATE/bids.before"
listing() { find "$WORK" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -vx -e out -e work | sort; }
listing >"$STATE/work.before"
mkdir -m 0777 "$WORK/out" "$WORK/work"  # the image's own non-root user writes here

# run_checked NAME ARGS...: docker run (the image's default user); its `docker diff` may list only the mount points
run_checked() {
    local name=$1 diff rc=0
    shift
    "$DOCKER" rm -f "bp-check-$name" >/dev/null 2>&1 || true
    "${RUN[@]}" --name "bp-check-$name" "$@" || rc=$?
    diff=$("$DOCKER" diff "bp-check-$name" | grep -vx -e 'A /data' -e 'A /out' -e 'A /work' -e 'A /models.*' || true)
    "$DOCKER" rm "bp-check-$name" >/dev/null
    [ -z "$diff" ] || { log "the container wrote into its own file system: $diff"; return 1; }
    return $rc
}
expect_version() { [ "$("$@")" = "brainparc $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/brainparc/__init__.py")" ]; }
step "docker --version" expect_version run_checked version "$IMAGE" --version
IO=(-v "$BIDS:/data:ro" -v "$WORK/out:/out" -v "$WORK/work:/work")
for bind in "${BINDS[@]}"; do IO+=(-v "$bind:ro"); done
step "docker participant" run_checked participant "${IO[@]}" "$IMAGE" /data /out participant \
    -w /work --nprocs 2 --omp-nthreads 1 "${MODEL_ARGS[@]}"
step "docker group" run_checked group "${IO[@]}" "$IMAGE" /data /out group
CHECK=("${RUN[@]}" --rm -v "$REPO/tests/container:/check:ro" -v "$BIDS:/data:ro" --entrypoint python3)
step "derivatives (docker)" "${CHECK[@]}" -v "$WORK/out:/out:ro" "$IMAGE" /check/check_outputs.py /data /out \
    --container docker --group
step "input unchanged" cmp <(checksums) "$STATE/bids.before"
step "nothing written beside out/ and work/" cmp <(listing) "$STATE/work.before"

# -- 5. Singularity/Apptainer -------------------------------------------------------------------------------------------
make_apptainer_rootfs() {
    debootstrap --variant=minbase --include=apptainer,squashfs-tools,ca-certificates sid "$STATE/apptainer-rootfs.tmp" \
        "$DEBIAN_MIRROR" >"$STATE/debootstrap-sid.log"
    mv "$STATE/apptainer-rootfs.tmp" "$STATE/apptainer-rootfs"
}
if [ $SIF = 1 ]; then
    if command -v apptainer >/dev/null || command -v singularity >/dev/null; then
        APPTAINER=("$(command -v apptainer || command -v singularity)")
        APPTAINER_AS_USER=("${APPTAINER[@]}")
        [ "$(id -u)" = 0 ] || BUILD_OPTS=(--fakeroot)
    elif [ "$(id -u)" = 0 ] && command -v podman >/dev/null && command -v debootstrap >/dev/null; then
        [ -x "$STATE/apptainer-rootfs/usr/bin/apptainer" ] || step "apptainer rootfs (debootstrap sid)" \
            make_apptainer_rootfs
        # limits at or below the host's: podman's defaults are higher and this container may not raise them
        PODMAN=(podman run --rm --privileged --network none --ulimit nofile=16384:16384 --ulimit nproc=16384:16384
            -v "$WORK:$WORK")
        for bind in "${BINDS[@]}"; do PODMAN+=(-v "${bind%%:*}:${bind%%:*}:ro"); done
        APPTAINER=("${PODMAN[@]}" -w "$WORK/sif" --rootfs "$STATE/apptainer-rootfs" apptainer)
        # runs as an unprivileged user (nobody), as on a cluster: apptainer uses a user namespace, no setuid
        APPTAINER_AS_USER=("${PODMAN[@]}" --user 65534:65534 -w /tmp --rootfs "$STATE/apptainer-rootfs" apptainer)
    else
        printf 'singularity\t-\tSKIPPED (no apptainer, and no root+podman+debootstrap to run one)\n' >>"$SUMMARY"
        SIF=0
    fi
fi
if [ $SIF = 1 ]; then
    mkdir -p "$WORK/sif"
    mkdir -m 0777 "$WORK/sif-out" "$WORK/sif-work"
    cp "$REPO/Singularity.def" "$WORK/sif/"
    step "docker save" "$DOCKER" save -o "$WORK/sif/brainparc-docker.tar" "$IMAGE"
    in_sif_dir() { (cd "$WORK/sif" && "$@"); }  # Singularity.def reads brainparc-docker.tar from the current dir
    # --notest: root's %test run asks for every capability, which a container without CAP_SYS_RESOURCE refuses
    # ("Requesting capability set ... while permitted capability set is ..."); `apptainer test` runs it below instead
    step "apptainer build" in_sif_dir "${APPTAINER[@]}" build "${BUILD_OPTS[@]}" --notest --force brainparc.sif \
        Singularity.def
    rm "$WORK/sif/brainparc-docker.tar"
    SIF_MB=$(( $(stat -c %s "$WORK/sif/brainparc.sif") / 1000000 ))
    printf 'SIF size\t-\t%s MB\n' "$SIF_MB" >>"$SUMMARY"
    step "apptainer test (%test)" "${APPTAINER_AS_USER[@]}" test "$WORK/sif/brainparc.sif"
    SING=("${APPTAINER_AS_USER[@]}" run --containall --no-home --pwd /tmp)
    step "singularity --version" expect_version "${SING[@]}" "$WORK/sif/brainparc.sif" --version
    SIO=(-B "$BIDS:/data:ro" -B "$WORK/sif-out:/out" -B "$WORK/sif-work:/work")
    for bind in "${BINDS[@]}"; do SIO+=(-B "$bind:ro"); done
    step "singularity participant" "${SING[@]}" "${SIO[@]}" "$WORK/sif/brainparc.sif" /data /out participant -w /work \
        --nprocs 2 --omp-nthreads 1 "${MODEL_ARGS[@]}"
    step "derivatives (singularity)" "${CHECK[@]}" -v "$WORK/sif-out:/out:ro" "$IMAGE" /check/check_outputs.py /data /out \
        --container singularity
    step "input unchanged (singularity)" cmp <(checksums) "$STATE/bids.before"
fi

log "summary ($WORK/summary.tsv):"
awk -F '\t' '{ printf "  %-40s %8s  %s\n", $1, $2, $3 }' "$SUMMARY" >&2
log "all checks passed"
