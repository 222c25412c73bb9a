#!/usr/bin/env bash
# `shoal bench a2a` across hosts (label multihost): the expert exchange against raw MPI_Alltoallv over
# OpenMPI's TCP transport between hosts of a test bed (tests/cluster/testbed.sh), one rank per host,
# at 2 and 3 hosts, on unshaped links and with every host's link held to 1 Gbit/s each way (a token
# bucket; this kernel has no netem, so no added delay). Checked here: the exchange moves every element
# right (#wrong 0), the JSON says it ran on that many hosts, and `shoal plan --calibrate` takes it as
# a cross-host run — for the shaped run against a hardware entry whose NIC is that 1 Gbit/s, the
# net_eff it derives must be a plausible share of the link (0.3-1). The ratios are printed; they are
# benchmark figures (docs/benchmarks.md, "Across hosts"), not asserted: these machines are noisy.
set -euo pipefail
shoal=$(realpath "$1")
root=$(realpath "$2")
source "$root/tests/cluster/testbed.sh"
testbed_require
command -v mpirun >/dev/null || { echo "SKIP: mpirun is not installed"; exit 77; }

testbed_up a2a 3 103
tmp=$TB_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
printf 'shoal-h1 slots=1\nshoal-h2 slots=1\nshoal-h3 slots=1\n' >"$tmp/hostfile"
fail() { echo "FAIL $*"; exit 1; }

bench() {  # NP NAME: runs the bench from shoal-h1 over NP hosts, JSON to $tmp/NAME.json
  local np=$1 name=$2
  # shellcheck disable=SC2046  # the bed's mpirun options are words
  testbed_run 1 timeout 240 mpirun $(testbed_mpirun_args) --hostfile "$tmp/hostfile" -np "$np" \
    -x OMPI_MCA_mpi_yield_when_idle "$shoal" bench a2a --hidden 2048 --topk 8 --experts 64 \
    --min-tokens 16 --max-tokens 256 --seconds 0.2 --json "$tmp/$name.json" >"$tmp/$name.txt" 2>&1 ||
    { cat "$tmp/$name.txt"; fail "bench a2a at $np hosts ($name)"; }
  grep -E '^ +[0-9]|goal' "$tmp/$name.txt" | sed "s/^/     [$name] /" || { cat "$tmp/$name.txt"; fail "$name: no result rows"; }
  grep -q '^# wrong elements: 0$' "$tmp/$name.txt" || fail "$name: the exchange moved elements wrong"
  python3 - "$tmp/$name.json" "$np" <<'PY' || fail "$name: the JSON does not describe a run on $np hosts"
import json, sys
j = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
assert j["tool"] == "shoal bench a2a" and j["ok"] and j["hosts"] == n and j["ranks"] == n, j
assert j["max_ranks_per_host"] == 1 and len(j["results"]) == 5, j
PY
  echo "ok   bench a2a across $np hosts ($name): every element right, the JSON names $np hosts"
}

bench 2 tcp2
bench 3 tcp3
for k in 1 2 3; do testbed_rate "$k" 1gbit; done
bench 2 tbf2
bench 3 tbf3

# The planner takes the shaped 3-host run as a fabric measurement: against an h100 whose NIC is the
# bed's 1 Gbit/s (0.125 GB/s), net_eff is the share of the link that MPI_Alltoallv achieved.
printf 'hardware:\n  h100:\n    net_gbps: 0.125\n' >"$tmp/bed-hw.yaml"
"$shoal" plan --preset mixtral-8x22b --hardware h100 --hardware-file "$tmp/bed-hw.yaml" \
  --calibrate "$tmp/tbf3.json" --json >"$tmp/plan.json" 2>"$tmp/plan.err" || { cat "$tmp/plan.err"; fail "plan --calibrate"; }
grep "net_eff" "$tmp/plan.err" | sed 's/^/     /' || true
python3 - "$tmp/plan.json" <<'PY' || fail "plan --calibrate did not take a plausible net_eff from the shaped run"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["calibration"]["net_eff"]
assert 0.3 <= e <= 1.0, e
print("ok   shoal plan --calibrate: net_eff %.3f of the bed's 1 Gbit/s links, from 3 hosts" % e)
PY
# One host's run is refused as a network measurement.
testbed_run 1 timeout 120 mpirun --allow-run-as-root --bind-to none -np 2 -x OMPI_MCA_mpi_yield_when_idle \
  "$shoal" bench a2a --hidden 256 --topk 2 --experts 8 --min-tokens 8 --max-tokens 8 --seconds 0.05 \
  --json "$tmp/one.json" >/dev/null 2>&1 || fail "bench a2a on one host"
if "$shoal" plan --preset mixtral-8x22b --hardware h100 --calibrate "$tmp/one.json" >/dev/null 2>"$tmp/one.err"; then
  fail "plan --calibrate took a one-host run as a network measurement"
fi
grep -q "measures shared memory" "$tmp/one.err" || fail "one-host refusal: $(cat "$tmp/one.err")"
echo "ok   a one-host run is refused as a network measurement"
