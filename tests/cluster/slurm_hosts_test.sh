#!/usr/bin/env bash
# A multi-node Slurm (label multihost): on a test bed (tests/cluster/testbed.sh), slurmctld and munged
# run on shoal-h1 and a slurmd on each of shoal-h2..h4, each host with its own hostname and network.
# `sbatch --nodes=3 --ntasks-per-node=1 deploy/slurm/shoal.sbatch` puts the coordinator on the first
# node and one worker rank per node (srun, PMIx, OpenMPI over TCP); a client on shoal-h1 gets
# transformers' greedy tokens from the URL the job announces, with rank r on the job's r-th node. Then
# the single-node test's paths (tests/slurm/job_checks.sh): scancel, TERM to the batch script, and a
# real time limit — each ends with every process gone.
set -euo pipefail
shoal=$(realpath "$1")
root=$(realpath "$2")
source "$root/tests/cluster/testbed.sh"
testbed_require
for t in slurmctld slurmd munged sbatch; do
  command -v "$t" >/dev/null || { echo "SKIP: $t is not installed (bash scripts/setup.sh installs it)"; exit 77; }
done

TESTBED_TIMEOUT_S=${TESTBED_TIMEOUT_S:-420} testbed_up slurm 4 102
tmp=$TB_DIR
chmod 755 "$tmp"  # munged runs as user munge and keeps its socket in here
source "$root/tests/slurm/job_checks.sh"

# munge on shoal-h1 with this bed's own key and socket; every host reaches the socket by its path.
mkdir -p "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$tmp/munge"
chmod 755 "$tmp/munge"  # munged: its socket directory must be searchable by all
chmod 400 "$tmp/munge/munge.key"
testbed_run 1 runuser -u munge -- /usr/sbin/munged --key-file="$tmp/munge/munge.key" \
  --socket="$tmp/munge/munge.socket" --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munge/munged.log" \
  --seed-file="$tmp/munge/munged.seed" || fail "munged did not start: $(cat "$tmp/munge/munged.log" 2>/dev/null)"

net=10.77.$TB_NET
mkdir -p "$tmp/state" "$tmp/log" "$tmp/run"
for k in 2 3 4; do mkdir -p "$tmp/spool/shoal-h$k" "$tmp/tmpfs/shoal-h$k"; done
cat >"$tmp/slurm.conf" <<CONF
ClusterName=shoalbed
SlurmctldHost=shoal-h1($net.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.socket
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
SlurmdSpoolDir=$tmp/spool/%n
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.%n.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.%n.log
TmpFS=$tmp/tmpfs/%n
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=shoal-h2 NodeAddr=$net.2 CPUs=2
NodeName=shoal-h3 NodeAddr=$net.3 CPUs=2
NodeName=shoal-h4 NodeAddr=$net.4 CPUs=2
PartitionName=test Nodes=shoal-h[2-4] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$tmp/slurm.conf
"$TB_ENTER" 1 slurmctld -D -i >"$tmp/log/slurmctld.out" 2>&1 &
for k in 2 3 4; do "$TB_ENTER" "$k" slurmd -D -N "shoal-h$k" >"$tmp/log/slurmd.$k.out" 2>&1 & done
for _ in $(seq 1 200); do
  [ "$(sinfo -h -o %T 2>/dev/null | sort -u)" = idle ] && [ "$(sinfo -h -o %D 2>/dev/null)" = 3 ] && break
  sleep 0.1
done
[ "$(sinfo -h -o '%D %T' 2>/dev/null)" = "3 idle" ] || fail "the Slurm nodes did not come up: $(sinfo -N 2>&1)"
echo "ok   slurm up on the bed: $(sinfo -h -o '%P %D %T %N')"

fixture="$root/tests/fixtures/qwen3-moe-f32"
key=sl-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
cat >"$tmp/shoal.yaml" <<YAML
model:
  path: $fixture
  name: tiny-qwen3-moe
engine:
  threads: 1
kv_cache:
  memory_mib: 16
server:
  host: 0.0.0.0
  port: 0
  api_keys: [$key]
YAML
export SHOAL_BIN=$shoal
SBATCH_ARGS=(--nodes=3 --ntasks-per-node=1)
check_job_serving() {  # URL JOB: from shoal-h1, which resolves the node names as the cluster does
  local nodes
  nodes=$(scontrol show hostnames "$(squeue -h -j "$2" -o %N)" | paste -sd,)
  [ "$nodes" = shoal-h2,shoal-h3,shoal-h4 ] || { echo "FAIL job $2 ran on $nodes"; return 1; }
  [[ "$1" == http://shoal-h2:* ]] || { echo "FAIL the job announced $1, not its first node"; return 1; }
  testbed_run 1 python3 "$root/tests/cluster/check_serving.py" "$1" "$fixture" "slurm-$2" "$nodes" "$key"
}
check_serving_then_scancel
check_batch_term
check_time_limit
echo "ok   multi-node Slurm: 3 nodes served, stopped by scancel, by TERM and by the time limit"
