#!/usr/bin/env bash
# shoal under a real Slurm (label slurm): starts munge, slurmctld and slurmd on this machine with a
# throw-away config, submits deploy/slurm/shoal.sbatch (coordinator + a 2-task srun worker group over
# PMIx), checks over HTTP that the group serves transformers' greedy tokens, then scancels the job and
# checks that everything stopped — after scancel, after a TERM to the batch script, and at a real
# 3-minute time limit (Slurm's warning signal before it). Needs root and Debian's slurmctld/slurmd/slurm-client/munge
# (scripts/setup.sh installs them); exits 77 (skipped) without them.
set -euo pipefail
shoal=$1
root=$2
if [ "$(id -u)" -ne 0 ] || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "SKIP: needs root and slurmctld/slurmd/munge (bash scripts/setup.sh installs them)"
  exit 77
fi
tmp=$(mktemp -d /tmp/shoal-slurm.XXXXXX)
source "$root/tests/slurm/job_checks.sh"  # fail, submit and the job checks run below
started_munge=0
cleanup() {
  set +e
  [ -n "${job:-}" ] && scancel "$job" 2>/dev/null
  local pids=""
  for p in slurmd slurmctld; do
    [ -f "$tmp/$p.pid" ] && pids="$pids $(cat "$tmp/$p.pid")"
  done
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill $pids 2>/dev/null
  # Gone before the next run binds the same ports (a lingering slurmd would keep its node down).
  for _ in $(seq 1 100); do
    local alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  if [ "$started_munge" = 1 ]; then
    pkill -u munge -x munged 2>/dev/null
    # Gone before this returns: a next run that still saw it would not start its own.
    for _ in $(seq 1 50); do pgrep -x munged >/dev/null || break; sleep 0.1; done
  fi
  [ -n "${SHOAL_KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

# munge: the key and the daemon (as user munge), unless one already answers. Asked, not looked up by
# name: a munged that an earlier run is still stopping has a process but soon no socket.
if ! munge -n </dev/null >/dev/null 2>&1; then
  for _ in $(seq 1 50); do pgrep -x munged >/dev/null || break; sleep 0.1; done
  [ -f /etc/munge/munge.key ] || mungekey --create >/dev/null
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
  started_munge=1
  for _ in $(seq 1 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null >/dev/null 2>&1 || fail "munged did not start"
fi

# TmpFS in $tmp: PMIx makes its per-step directories there (spmix_appdir_<uid>_<job>.<step>), and
# job ids start at 1 in every run, so one left in /tmp by an earlier run would fail that step's launch.
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/tmpfs"
cat > "$tmp/slurm.conf" <<CONF
ClusterName=shoaltest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldPort=6917
SlurmdPort=6918
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
TmpFS=$tmp/tmpfs
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
SlurmdParameters=config_overrides
ReturnToService=2
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 Gres=gpu:2 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
# Two GPUs as far as Slurm's accounting goes, backed by /dev/null and /dev/zero (TaskPlugin=task/none
# constrains no devices): enough for a job to be given GPUs, which is what the batch script checks.
printf 'NodeName=localhost Name=gpu File=/dev/null\nNodeName=localhost Name=gpu File=/dev/zero\n' > "$tmp/gres.conf"
export SLURM_CONF=$tmp/slurm.conf
slurmctld -i
slurmd -N localhost
for _ in $(seq 1 100); do
  [ "$(sinfo -h -n localhost -o %T 2>/dev/null)" = idle ] && break
  sleep 0.1
done
[ "$(sinfo -h -n localhost -o %T)" = idle ] || fail "the Slurm node did not come up: $(sinfo -h -n localhost -o %T)"
echo "ok   slurm up: $(sinfo -h -o '%P %D %T')"

fixture="$root/tests/fixtures/qwen3-moe-f32"
cat > "$tmp/shoal.yaml" <<YAML
model:
  path: $fixture
  name: tiny-qwen3-moe
engine:
  threads: 1
server:
  port: 0
YAML
cd "$tmp"
export SHOAL_BIN=$shoal
SBATCH_ARGS=(--ntasks=2)
check_job_serving() {  # URL JOB
  python3 "$root/tests/cluster/check_serving.py" "$1" "$fixture" "slurm-$2" "*,*"
}
check_device_mismatch
check_serving_then_scancel
check_two_jobs
check_dp_groups
check_attention_tp
check_worker_relaunch
check_batch_term
check_time_limit
