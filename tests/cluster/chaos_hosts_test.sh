#!/usr/bin/env bash
# Network faults under load (labels multihost, chaos): on a test bed of 4 hosts, the coordinator on
# shoal-h4 and one engine group over shoal-h1..h3 (mpirun from h4, as in mpi_hosts_test.sh), kept
# running by a relaunch loop — what the Slurm batch script does within a job, and what an operator's
# launcher does for `shoal serve` (docs/operations.md). Under a load of streaming requests
# (tests/cluster/chaos_load.py: every one must complete with exactly the undisturbed tokens):
#   loss  2 % of packets dropped both ways on shoal-h2's link (nftables; this kernel has no netem,
#         so no added delay): the group keeps serving, slower;
#   cut   shoal-h3's link down for 4 s, past the heartbeat timeout, then up again: the group fails,
#         its requests wait, the launcher starts the group again and they continue token-exact.
# Afterwards nothing of the test is left (the test bed's teardown, checked by multihost_leftovers_test).
set -euo pipefail
shoal=$(realpath "$1")
root=$(realpath "$2")
source "$root/tests/cluster/testbed.sh"
testbed_require
command -v mpirun >/dev/null || { echo "SKIP: mpirun is not installed"; exit 77; }
command -v nft >/dev/null || { echo "SKIP: nft (nftables) is not installed"; exit 77; }

testbed_up chaos 4 104
tmp=$TB_DIR
coord=$(testbed_addr 4)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export SHOAL_CONTROL_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
key=ch-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
printf 'shoal-h1 slots=1\nshoal-h2 slots=1\nshoal-h3 slots=1\n' >"$tmp/hostfile"
fail() { echo "FAIL $*"; for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "---- $(basename "$f")"; tail -n 40 "$f"; }; done; exit 1; }

cat >"$tmp/chaos.yaml" <<YAML
model:
  path: $root/models/demo-kjv-moe
  name: chaos-demo
engine:
  threads: 1
kv_cache:
  memory_mib: 32
server:
  host: 0.0.0.0
  port: 8000
  api_keys: [$key]
  control_host: $coord
  control_port: 29500
  heartbeat_ms: 200
  heartbeat_timeout_ms: 1500
  migration_timeout_s: 120
parallel:
  collective_timeout_ms: 5000
YAML
"$TB_ENTER" 4 "$shoal" serve --config "$tmp/chaos.yaml" --print-url "$tmp/url" >"$tmp/serve.log" 2>&1 &
serve_pid=$!

# The launcher: the group's mpirun again whenever it ends, until told to stop.
launcher() {
  local n=0
  while [ ! -e "$tmp/stop" ]; do
    n=$((n + 1))
    echo "launch $n" >>"$tmp/launcher.log"
    # shellcheck disable=SC2046  # the bed's mpirun options are words
    "$TB_ENTER" 4 mpirun $(testbed_mpirun_args) --hostfile "$tmp/hostfile" -np 3 -x SHOAL_CONTROL_TOKEN \
      -x OMPI_MCA_mpi_yield_when_idle "$shoal" worker --config "$tmp/chaos.yaml" --coordinator "$coord:29500" \
      --group mh --connect-timeout 60 >>"$tmp/workers.log" 2>&1 || true
    echo "launch $n ended" >>"$tmp/launcher.log"
    [ -e "$tmp/stop" ] || sleep 1
  done
}
launcher &
launcher_pid=$!

for _ in $(seq 1 600); do
  [ -s "$tmp/url" ] && break
  kill -0 "$serve_pid" 2>/dev/null || fail "the coordinator exited"
  sleep 0.1
done
[ -s "$tmp/url" ] || fail "the group was not ready within 60 s"
echo "ok   coordinator on shoal-h4, group over shoal-h1..h3"

load() {  # TAG FAULT [HEAL AFTER]
  python3 "$root/tests/cluster/chaos_load.py" "http://$coord:8000" "$key" mh "$@" || fail "$1: requests under the fault"
}
ns2="ip netns exec shoal-chaos-h2"
load loss "$ns2 nft -f - <<'NFT'
table inet chaos {
  chain in { type filter hook input priority 0; numgen random mod 100 < 2 drop; }
  chain out { type filter hook output priority 0; numgen random mod 100 < 2 drop; }
}
NFT"
$ns2 nft delete table inet chaos
load cut "ip -n shoal-chaos-h3 link set eth0 down" "ip -n shoal-chaos-h3 link set eth0 up" 4
grep -q "launch 2" "$tmp/launcher.log" || fail "the group was not launched again after the cut"
echo "ok   the cut group was launched again: $(grep -c 'ended' "$tmp/launcher.log") launch(es) ended"

touch "$tmp/stop"
kill -INT "$serve_pid"
for _ in $(seq 1 300); do kill -0 "$launcher_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$launcher_pid" 2>/dev/null && fail "the workers were still running 30 s after the coordinator's shutdown"
wait "$serve_pid" || fail "the coordinator exited with an error"
echo "ok   the coordinator and the group stopped"
