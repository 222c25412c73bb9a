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
job_out=job.out  # the output file of the job under test, printed on a failure
fail() {
  echo "FAIL $*"
  [ -f "$tmp/$job_out" ] && { echo "---- $job_out"; cat "$tmp/$job_out"; }
  [ -f "$tmp/slurmctld.log" ] && { echo "---- slurmctld.log (tail)"; tail -n 30 "$tmp/slurmctld.log"; }
  exit 1
}

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
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
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
# Submits the batch script with extra sbatch options (output to $tmp/$1) and waits until its URL file
# appears; sets $job.
submit() {
  local out=$1; shift
  job_out=$out
  job=$(sbatch --parsable --ntasks=2 --output="$tmp/$out" "$@" "$root/deploy/slurm/shoal.sbatch" "$tmp/shoal.yaml")
  for _ in $(seq 1 600); do
    [ -s "$tmp/shoal-$job.url" ] && return 0
    [ -z "$(squeue -h -j "$job" -o %T 2>/dev/null || true)" ] && fail "job $job ended before it was ready"
    sleep 0.1
  done
  fail "job $job was not ready within 60 s"
}

submit job.out
url=$(cat "$tmp/shoal-$job.url")
echo "ok   job $job ready at $url"

python3 - "$url" "$fixture" "slurm-$job" <<'PY' || fail "requests to the Slurm job"
import http.client, json, sys
url, fixture, group = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = url[len("http://"):].rsplit(":", 1)
def req(method, path, body=None):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
st, j = req("GET", "/v1/cluster")
assert st == 200 and j["groups"][0]["name"] == group and len(j["groups"][0]["ranks"]) == 2, j
print("ok   /v1/cluster: group %s with 2 ranks" % group)
for i, p in enumerate(json.load(open(fixture + "/expected.json"))["prompts"]):
    st, j = req("POST", "/v1/completions", {"prompt": p["prompt_ids"], "max_tokens": len(p["greedy_tokens"]),
                                            "temperature": 0, "ignore_eos": True, "return_token_ids": True})
    assert st == 200 and j["choices"][0]["token_ids"] == p["greedy_tokens"], (st, j)
    print("ok   prompt %d: greedy tokens through Slurm equal transformers'" % i)
PY

scancel "$job"
for _ in $(seq 1 300); do
  [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
  sleep 0.1
done
[ -z "$(squeue -h -j "$job" 2>/dev/null)" ] || fail "job $job still running 30 s after scancel"
grep -q "shoal.sbatch: stopping" "$tmp/job.out" || fail "the batch script did not run its shutdown"
if pgrep -f "$shoal (serve|worker)" >/dev/null; then fail "shoal processes left after scancel: $(pgrep -af "$shoal")"; fi
[ -e "$tmp/shoal-$job.url" ] && fail "the URL file outlived the job"
echo "ok   scancel stopped the coordinator and every worker"
job=""

# The orderly path: what Slurm does a minute before the time limit (the script's --signal=B:TERM@60)
# is a TERM to the batch shell alone, which scancel --batch --signal=TERM sends now. The script must
# have the coordinator shut the workers down (no TERM to them), then end the job.
submit job2.out
scancel --batch --signal=TERM "$job"
for _ in $(seq 1 300); do
  [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
  sleep 0.1
done
[ -z "$(squeue -h -j "$job" 2>/dev/null)" ] || fail "job $job still running 30 s after TERM to its batch script"
grep -q "the workers stopped on the coordinator's shutdown" "$tmp/job2.out" ||
  fail "TERM to the batch script did not shut the workers down through the coordinator: $(cat "$tmp/job2.out")"
if pgrep -f "$shoal (serve|worker)" >/dev/null; then fail "shoal processes left: $(pgrep -af "$shoal")"; fi
echo "ok   TERM to the batch script (the time-limit path) shut the workers down through the coordinator"
job=""

# A real time limit: --time=3 with the script's warning moved to 90 s before it. Slurm may send the
# warning up to 60 s early (its periodic check), so it comes 30-90 s after the start — after the
# group is ready — and the orderly shutdown must end the job before the limit kills it.
start=$(date +%s)
submit job3.out --time=3 --signal=B:TERM@90
echo "ok   job $job (3-minute limit) ready; waiting for Slurm's warning signal"
for _ in $(seq 1 2400); do
  [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
  sleep 0.1
done
elapsed=$(( $(date +%s) - start ))
[ -z "$(squeue -h -j "$job" 2>/dev/null)" ] || fail "job $job still running after ${elapsed} s"
grep -q "DUE TO TIME LIMIT" "$tmp/job3.out" && fail "job $job was killed by its time limit: $(cat "$tmp/job3.out")"
grep -q "the workers stopped on the coordinator's shutdown" "$tmp/job3.out" ||
  fail "the time-limit warning did not shut the workers down through the coordinator: $(cat "$tmp/job3.out")"
if pgrep -f "$shoal (serve|worker)" >/dev/null; then fail "shoal processes left: $(pgrep -af "$shoal")"; fi
echo "ok   Slurm's time-limit warning (TERM 90 s before the 3-minute limit) shut the job down in order after ${elapsed} s"
job=""
