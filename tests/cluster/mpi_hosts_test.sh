#!/usr/bin/env bash
# An engine group across hosts (label multihost): on a test bed of 5 hosts (tests/cluster/testbed.sh),
# the coordinator runs on shoal-h4 serving HTTP to other machines (0.0.0.0, an API key), and mpirun
# — from shoal-h4 too, as from a login node, through an rsh agent — starts one worker rank on each of
# shoal-h1..h3, exchanging tokens over OpenMPI's TCP transport and joining the coordinator's control
# port across the bridge with the join secret. For every model fixture, requests from outside the
# hosts get transformers' greedy tokens (what one process gives: tests/cli/worker_test.sh), and
# /v1/cluster shows rank r on shoal-h(r+1). A worker on shoal-h5 without the secret is refused. The
# expert exchange must have gone between the worker hosts (their links' byte counts).
set -euo pipefail
shoal=$(realpath "$1")
root=$(realpath "$2")
source "$root/tests/cluster/testbed.sh"
testbed_require
command -v mpirun >/dev/null || { echo "SKIP: mpirun is not installed"; exit 77; }

testbed_up mpi 5 101
tmp=$TB_DIR  # removed with the bed
coord=$(testbed_addr 4)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export SHOAL_CONTROL_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
key=mh-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
printf 'shoal-h1 slots=1\nshoal-h2 slots=1\nshoal-h3 slots=1\n' >"$tmp/hostfile"
fail() { echo "FAIL $*"; for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "---- $(basename "$f")"; tail -n 40 "$f"; }; done; exit 1; }

link_bytes() {  # K: bytes sent + received on host K's eth0 (K = 0: the bridge's own, this namespace's)
  local dev=(ip -s -j link show "$TB_BRIDGE")
  [ "$1" -gt 0 ] && dev=(ip -n "shoal-mpi-h$1" -s -j link show eth0)
  "${dev[@]}" | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["rx"]["bytes"] + s["tx"]["bytes"])'
}
# Bytes between the worker hosts alone. A packet between two of h1..h3 is counted on both their
# links; one between a worker and h4 (control plane, mpirun) on one of them and on h4's; the HTTP
# client in this namespace talks to h4 through the bridge's own address. So worker-to-worker bytes =
# (h1 + h2 + h3 - h4 + bridge) / 2, the link-level headers of those packets included.
worker_bytes() {
  echo $(( ($(link_bytes 1) + $(link_bytes 2) + $(link_bytes 3) - $(link_bytes 4) + $(link_bytes 0)) / 2 ))
}

serve_fixture() {  # FIXTURE_DIR: one coordinator + a 3-host group, checked, then shut down in order
  local dir=$1 name
  name=$(basename "$dir")
  cat >"$tmp/$name.yaml" <<YAML
model:
  path: $dir
  name: $name
engine:
  threads: 1
kv_cache:
  memory_mib: 16
server:
  host: 0.0.0.0
  port: 8000
  api_keys: [$key]
  control_host: $coord
  control_port: 29500
parallel:
  collective_timeout_ms: 60000
YAML
  rm -f "$tmp/url"
  "$TB_ENTER" 4 "$shoal" serve --config "$tmp/$name.yaml" --print-url "$tmp/url" >"$tmp/serve-$name.log" 2>&1 &
  local serve_pid=$!
  # shellcheck disable=SC2046  # the bed's mpirun options are words
  "$TB_ENTER" 4 mpirun $(testbed_mpirun_args) --hostfile "$tmp/hostfile" -np 3 -x SHOAL_CONTROL_TOKEN -x OMPI_MCA_mpi_yield_when_idle \
    "$shoal" worker --config "$tmp/$name.yaml" --coordinator "$coord:29500" --group mh --connect-timeout 60 \
    >"$tmp/workers-$name.log" 2>&1 &
  local mpirun_pid=$!
  for _ in $(seq 1 600); do
    [ -s "$tmp/url" ] && break
    kill -0 "$mpirun_pid" 2>/dev/null || fail "$name: the workers exited before the group was ready"
    kill -0 "$serve_pid" 2>/dev/null || fail "$name: the coordinator exited"
    sleep 0.1
  done
  [ -s "$tmp/url" ] || fail "$name: the group was not ready within 60 s"
  local before  # from here on the workers move only requests' traffic (start-up is over)
  before=$(worker_bytes)
  python3 "$root/tests/cluster/check_serving.py" "http://$coord:8000" "$dir" mh shoal-h1,shoal-h2,shoal-h3 "$key" ||
    fail "$name: serving across hosts"
  local moved=$(( $(worker_bytes) - before ))

  if [ "$name" = qwen3-moe-f32 ]; then
    # Another host without the join secret: refused by the coordinator, with the reason.
    set +e
    out=$(testbed_run 5 env -u SHOAL_CONTROL_TOKEN timeout 30 "$shoal" worker --config "$tmp/$name.yaml" \
            --coordinator "$coord:29500" --group intruder --connect-timeout 5 2>&1)
    rc=$?
    set -e
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "control token" <<<"$out"; then
      echo "ok   a worker on shoal-h5 without the join secret is refused (rc=$rc)"
    else
      fail "a worker without the secret: rc=$rc, output: $out"
    fi
  fi

  kill -INT "$serve_pid"
  for _ in $(seq 1 300); do kill -0 "$mpirun_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$mpirun_pid" 2>/dev/null && fail "$name: the workers were still running 30 s after the coordinator's shutdown"
  wait "$serve_pid" || fail "$name: the coordinator exited with an error"
  set +e; wait "$mpirun_pid"; local rc=$?; set -e
  [ $rc -eq 0 ] || fail "$name: mpirun exited with $rc after the coordinator's shutdown"
  echo "ok   $name: the group stopped on the coordinator's shutdown; $moved bytes went between worker hosts"
  [ "$moved" -gt 20000 ] || fail "$name: only $moved bytes went between the worker hosts"
}

for dir in "$root"/tests/fixtures/*/; do
  [ -f "$dir/expected.json" ] || continue
  serve_fixture "${dir%/}"
done
echo "ok   every fixture served by a 3-host group"
