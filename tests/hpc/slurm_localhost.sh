#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost (munge + slurmctld + slurmd, Debian's slurm-wlm), and nipype's SLURM
# plugin submitting the participant workflow of a 2-participant dataset to it, one sbatch job per workflow node.
#
#   bash tests/hpc/slurm_localhost.sh [--plugin SLURM|SLURMGraph] [--model PATH]... [--keep]
#
# Needs root, the packages slurm-wlm and munge (`apt-get install -y slurm-wlm munge`) and the repository's .venv
# (scripts/test.sh makes it). Everything lives under STATE (default: a new temp dir): config, munge key and socket,
# daemon logs, the job-completion log (jobcomp/filetxt: one line per finished job) and the run's data. Nothing in
# /etc is changed; the daemons are stopped at exit. Weights: --model PATH (repeatable), or the bundled defaults when
# installed, else random-init tiny networks (a SMOKE CHECK of the scheduling, not of accuracy).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=$REPO/.venv/bin/python
STATE=${BRAINPARC_SLURM_STATE:-$(mktemp -d /tmp/brainparc-slurm.XXXXXX)}
PLUGIN=SLURM
MODELS=()
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --plugin) PLUGIN=$2; shift 2 ;;
        --model) MODELS+=("$(realpath "$2")"); shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "slurm_localhost.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
log() { echo "slurm_localhost.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
for exe in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
    command -v "$exe" >/dev/null || die "$exe not found: apt-get install -y slurm-wlm munge"
done
[ "$(id -u)" = 0 ] || die "run as root (the daemons run as root here)"
[ -x "$PY" ] || die "no $PY: run scripts/test.sh first"

PIDS=()
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 0 ] && [ $rc = 0 ]; then rm -rf "$STATE"; else log "kept $STATE"; fi
}
trap cleanup EXIT

# -- munge: a private key and socket ------------------------------------------------------------------------------------
mkdir -p "$STATE/munge" "$STATE/ctld" "$STATE/spool"
chmod 0700 "$STATE/munge"
dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$STATE/munge/munge.key"
SOCKET=$STATE/munge/munge.socket
munged --force --key-file "$STATE/munge/munge.key" --socket "$SOCKET" --pid-file "$STATE/munge/munged.pid" \
    --log-file "$STATE/munge/munged.log" --seed-file "$STATE/munge/munged.seed"
PIDS+=("$(cat "$STATE/munge/munged.pid")")
munge --socket "$SOCKET" -n | unmunge --socket "$SOCKET" >/dev/null || die "munge credential round trip failed"

# -- slurm.conf: one node (this machine), one partition -------------------------------------------------------------------
HOST=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
export SLURM_CONF=$STATE/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=brainparc-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((MEM / CPUS / 2))
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.txt
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 30); do [ -s "$STATE/slurmctld.pid" ] && [ -s "$STATE/slurmd.pid" ] && break; sleep 1; done
PIDS+=("$(cat "$STATE/slurmd.pid")" "$(cat "$STATE/slurmctld.pid")")
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 1; done
sinfo
[ "$(srun -N1 -n1 hostname)" = "$(hostname)" ] || die "srun did not run on this node"
log "cluster up: $(sinfo -h -o '%P %D %T %C')"

# -- the participant workflow through nipype's $PLUGIN plugin -------------------------------------------------------------
DATA=$STATE/data
"$PY" -c "from brainparc.demo import build_demo_dataset; build_demo_dataset('$DATA/bids')"
MODEL_ARGS=()
for m in "${MODELS[@]}"; do MODEL_ARGS+=(--model "$m"); done
if [ ${#MODELS[@]} = 0 ] && ! "$PY" -c "from brainparc.pipeline import load_models; load_models(['default'])" 2>/dev/null
then
    log "SMOKE CHECK: no bundled weights and no --model: random-init tiny networks (outputs are not meaningful)"
    "$PY" -c "from brainparc.models import build, save
save(build('brainparc-tiny'), '$DATA/parc-smoke.safetensors', preset='brainparc-tiny', training={'smoke': True})
save(build('autostrip-tiny'), '$DATA/strip-smoke.safetensors', preset='autostrip-tiny', training={'smoke': True})"
    MODEL_ARGS=(--model "$DATA/parc-smoke.safetensors" --model "$DATA/strip-smoke.safetensors")
fi
# each node is one sbatch job; the job runs the node with this .venv's python (sbatch exports the environment).
# nipype's SLURM plugin names jobs after $LOGNAME (KeyError 'LOGNAME' without it; login shells set it)
export LOGNAME=${LOGNAME:-$(id -un)}
PLUGIN_ARGS='{"sbatch_args": "--cpus-per-task=1 --mem=4G --time=30", "max_jobs": 4}'
start=$(date +%s)
"$REPO/.venv/bin/brainparc" "$DATA/bids" "$DATA/out" participant -w "$DATA/work" --omp-nthreads 1 \
    --plugin "$PLUGIN" --plugin-args "$PLUGIN_ARGS" "${MODEL_ARGS[@]}"
log "participant level through $PLUGIN took $(($(date +%s) - start)) s"
"$REPO/.venv/bin/brainparc" "$DATA/bids" "$DATA/out" group

# -- evidence: every job the controller ran, and the derivatives -------------------------------------------------------------
[ -s "$STATE/jobcomp.txt" ] || die "Slurm recorded no finished job"
# nipype names each job <node>.<workflow path>: count the workflow's jobs (not the srun test above)
WF_JOBS=$(grep 'Name=[^ ]*brainparc_wf' "$STATE/jobcomp.txt" || true)
JOBS=$(grep -c 'JobState=COMPLETED' <<<"$WF_JOBS" || true)
FAILED=$(grep -vc 'JobState=COMPLETED' <<<"$WF_JOBS" || true)
T1W=$(find "$DATA/bids" -name '*_T1w.nii.gz' | wc -l)
log "Slurm ran $JOBS completed workflow jobs ($FAILED others) for $T1W T1w images:"
awk '{ printf " "; for (i = 1; i <= NF; i++) if ($i ~ /^(JobId|Name|JobState|NodeList|StartTime|EndTime)=/) \
    printf " %s", $i; print "" }' "$STATE/jobcomp.txt" >&2
if [ "$JOBS" -lt "$T1W" ] || [ "$FAILED" != 0 ]; then die "expected completed jobs only, one per workflow node"; fi
"$PY" "$REPO/tests/container/check_outputs.py" "$DATA/bids" "$DATA/out" --container none --group
log "passed: $PLUGIN submitted the participant workflow to slurmctld on $HOST"
