# The checks a shoal Slurm job must pass, shared by tests/slurm/slurm_test.sh (one node) and
# tests/cluster/slurm_hosts_test.sh (three nodes on a test bed). Sourced once Slurm is up, with:
#   $tmp          the submission directory: job outputs, shoal-<job>.url, slurmctld.log
#   $root         the repository (deploy/slurm/shoal.sbatch)
#   $shoal        the binary (pgrep looks for "$shoal serve|worker" left behind)
#   SBATCH_ARGS   array of the allocation's options (e.g. --ntasks=2)
#   check_job_serving URL JOB    a function: checks the ready job over HTTP (exits non-zero on failure)
# Each check ends with nothing of shoal left running.

job=""
job_out=job.out  # the output file of the job under test, printed on a failure
fail() {
  echo "FAIL $*"
  [ -f "$tmp/$job_out" ] && { echo "---- $job_out"; cat "$tmp/$job_out"; }
  [ -f "$tmp/slurmctld.log" ] && { echo "---- slurmctld.log (tail)"; tail -n 30 "$tmp/slurmctld.log"; }
  exit 1
}

# Submits the batch script with extra sbatch options (output to $tmp/$1) and waits until its URL file
# appears; sets $job.
# The config is $tmp/shoal.yaml unless SUBMIT_CONFIG names another.
submit() {
  local out=$1; shift
  job_out=$out
  job=$(cd "$tmp" && sbatch --parsable "${SBATCH_ARGS[@]}" --output="$tmp/$out" "$@" \
          "$root/deploy/slurm/shoal.sbatch" "${SUBMIT_CONFIG:-$tmp/shoal.yaml}")
  for _ in $(seq 1 600); do
    [ -s "$tmp/shoal-$job.url" ] && return 0
    [ -z "$(squeue -h -j "$job" -o %T 2>/dev/null || true)" ] && fail "job $job ended before it was ready"
    sleep 0.1
  done
  fail "job $job was not ready within 60 s"
}

wait_job_gone() {  # SECONDS
  for _ in $(seq 1 $(($1 * 10))); do
    [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  return 1
}

no_shoal_left() {
  if pgrep -f "$shoal (serve|worker)" >/dev/null; then fail "shoal processes left: $(pgrep -af "$shoal")"; fi
}

# Serves, then scancel stops the coordinator and every worker and the script cleans up.
check_serving_then_scancel() {
  submit job.out
  local url
  url=$(cat "$tmp/shoal-$job.url")
  echo "ok   job $job ready at $url"
  check_job_serving "$url" "$job" || fail "requests to the Slurm job"
  scancel "$job"
  wait_job_gone 30 || fail "job $job still running 30 s after scancel"
  grep -q "shoal.sbatch: stopping" "$tmp/job.out" || fail "the batch script did not run its shutdown"
  no_shoal_left
  [ -e "$tmp/shoal-$job.url" ] && fail "the URL file outlived the job"
  echo "ok   scancel stopped the coordinator and every worker"
  job=""
}

# The orderly path: what Slurm does a minute before the time limit (the script's --signal=B:TERM@60)
# is a TERM to the batch shell alone, which scancel --batch --signal=TERM sends now. The script must
# have the coordinator shut the workers down (no TERM to them), then end the job.
check_batch_term() {
  submit job2.out
  scancel --batch --signal=TERM "$job"
  wait_job_gone 30 || fail "job $job still running 30 s after TERM to its batch script"
  grep -q "the workers stopped on the coordinator's shutdown" "$tmp/job2.out" ||
    fail "TERM to the batch script did not shut the workers down through the coordinator"
  no_shoal_left
  echo "ok   TERM to the batch script (the time-limit path) shut the workers down through the coordinator"
  job=""
}

# A real time limit: --time=3 with the script's warning moved to 90 s before it. Slurm may send the
# warning up to 60 s early (its periodic check), so it comes 30-90 s after the start — after the
# group is ready — and the orderly shutdown must end the job before the limit kills it.
check_time_limit() {
  local start elapsed
  start=$(date +%s)
  submit job3.out --time=3 --signal=B:TERM@90
  echo "ok   job $job (3-minute limit) ready; waiting for Slurm's warning signal"
  wait_job_gone 240 || fail "job $job still running after $(( $(date +%s) - start )) s"
  elapsed=$(( $(date +%s) - start ))
  grep -q "DUE TO TIME LIMIT" "$tmp/job3.out" && fail "job $job was killed by its time limit"
  grep -q "the workers stopped on the coordinator's shutdown" "$tmp/job3.out" ||
    fail "the time-limit warning did not shut the workers down through the coordinator"
  no_shoal_left
  echo "ok   Slurm's time-limit warning (TERM 90 s before the 3-minute limit) shut the job down in order after ${elapsed} s"
  job=""
}

# A worker rank killed with kill -9 while the job serves: the batch script relaunches the worker step
# within the job (a new incarnation of the group), the job serves transformers' tokens again, and
# scancel still leaves nothing behind.
check_worker_relaunch() {
  submit job4.out
  local url victim
  url=$(cat "$tmp/shoal-$job.url")
  victim=$(pgrep -f "$shoal worker" | head -n 1 || true)
  [ -n "$victim" ] || fail "no worker rank of job $job to kill"
  kill -9 "$victim"
  for _ in $(seq 1 600); do
    grep -q "worker step relaunched" "$tmp/job4.out" && break
    sleep 0.1
  done
  grep -q "worker step relaunched" "$tmp/job4.out" || fail "the batch script did not relaunch the worker step"
  python3 - "$url" <<'PY' || fail "job $job was not ready again within 60 s of the relaunch"
import sys, time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if urllib.request.urlopen(sys.argv[1] + "/ready", timeout=5).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
  check_job_serving "$url" "$job" || fail "requests to the Slurm job after the relaunch"
  pgrep -f "$shoal worker" | grep -qx "$victim" && fail "the killed rank $victim is still there"
  echo "ok   a worker rank killed with kill -9: the batch script relaunched the worker step and the job serves again"
  scancel "$job"
  wait_job_gone 30 || fail "job $job still running 30 s after scancel"
  no_shoal_left
  job=""
}

# A job whose allocation does not match the config's device is refused before anything starts, with
# a message that says what to change: GPUs allocated to a cpu config (it would silently run on the
# CPU), and a cuda config without GPUs. The latter needs no GPU to test; the former needs Slurm to
# hand out gres/gpu (slurm_test.sh declares two on its node: no device files, the count is enough).
check_device_mismatch() {
  local out gpu_yaml=$tmp/shoal-gpu.yaml
  sed 's/^engine:$/engine:\n  device: cuda/' "$tmp/shoal.yaml" > "$gpu_yaml"
  grep -q "device: cuda" "$gpu_yaml" || fail "could not make the cuda config"
  for case in "gpus-cpu" "nogpus-cuda"; do
    out=refused-$case.out
    job_out=$out
    if [ "$case" = gpus-cpu ]; then
      job=$(cd "$tmp" && sbatch --parsable "${SBATCH_ARGS[@]}" --gpus-per-task=1 --output="$tmp/$out" \
              "$root/deploy/slurm/shoal.sbatch" "$tmp/shoal.yaml")
    else
      job=$(cd "$tmp" && sbatch --parsable "${SBATCH_ARGS[@]}" --output="$tmp/$out" \
              "$root/deploy/slurm/shoal.sbatch" "$gpu_yaml")
    fi
    wait_job_gone 60 || fail "job $job ($case) still running: it should have been refused"
    if [ "$case" = gpus-cpu ]; then
      grep -q "this job was given GPUs (.*) but .* has engine.device: cpu" "$tmp/$out" ||
        fail "a GPU job with a cpu config was not refused"
    else
      grep -q "has engine.device: cuda but this job was given no GPUs" "$tmp/$out" ||
        fail "a cuda config without GPUs was not refused"
    fi
    [ -e "$tmp/shoal-$job.url" ] && fail "a refused job wrote a URL"
    no_shoal_left
  done
  echo "ok   GPUs with a cpu config, and a cuda config without GPUs: both refused with what to change"
  job=""
}

# Two jobs at once on one node: each takes its HTTP and control ports from its job id (the first
# free ones from there), so both serve, on different ports, and both shut down cleanly.
check_two_jobs() {
  local a b url_a url_b
  submit two-a.out
  a=$job
  url_a=$(cat "$tmp/shoal-$a.url")
  submit two-b.out
  b=$job
  url_b=$(cat "$tmp/shoal-$b.url")
  [ "$url_a" != "$url_b" ] || fail "two jobs on one node serve on the same URL $url_a"
  [ "${url_a##*:}" = "$((8000 + a % 1000))" ] || fail "job $a's port is not 8000 + job id mod 1000: $url_a"
  check_job_serving "$url_a" "$a" || fail "requests to job $a alongside job $b"
  check_job_serving "$url_b" "$b" || fail "requests to job $b alongside job $a"
  scancel "$a" "$b"
  job=$a; wait_job_gone 30 || fail "job $a still running 30 s after scancel"
  job=$b; wait_job_gone 30 || fail "job $b still running 30 s after scancel"
  no_shoal_left
  echo "ok   two jobs on one node: $url_a and $url_b, both serving, both stopped"
  job=""
}

# cluster.groups: 2 in one job: the tasks split into two engine groups (data-parallel replicas, one
# srun step each), both ready before the URL appears, both serving.
check_dp_groups() {
  local url dp_yaml=$tmp/shoal-dp.yaml
  { cat "$tmp/shoal.yaml"; printf 'cluster:\n  groups: 2\n'; } > "$dp_yaml"
  SUBMIT_CONFIG=$dp_yaml submit dp.out
  url=$(cat "$tmp/shoal-$job.url")
  for g in 0 1; do
    python3 "$root/tests/cluster/check_serving.py" "$url" "$fixture" "slurm-$job-g$g" "*" ||
      fail "group slurm-$job-g$g of the two-group job"
  done
  scancel "$job"
  wait_job_gone 30 || fail "job $job still running 30 s after scancel"
  no_shoal_left
  echo "ok   cluster.groups: 2 in one job: two engine groups of one rank each, both serving"
  job=""
}

# parallel.attention_tp: 2 over the job's 2 tasks: one replica of two TP ranks, serving transformers'
# tokens, shown in /v1/cluster; a TP size that does not divide the group is refused before anything starts.
check_attention_tp() {
  local url tp_yaml=$tmp/shoal-tp.yaml bad_yaml=$tmp/shoal-tp4.yaml
  { cat "$tmp/shoal.yaml"; printf 'parallel:\n  attention_tp: 2\n'; } > "$tp_yaml"
  SUBMIT_CONFIG=$tp_yaml submit tp.out
  url=$(cat "$tmp/shoal-$job.url")
  check_job_serving "$url" "$job" || fail "requests to the attention-TP job"
  python3 - "$url" "slurm-$job" <<'PY' || fail "/v1/cluster of the attention-TP job"
import http.client, json, sys
host, port = sys.argv[1][len("http://"):].rstrip("/").rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=30)
c.request("GET", "/v1/cluster")
g = [g for g in json.loads(c.getresponse().read())["groups"] if g["name"] == sys.argv[2]][0]
tp = sorted((r["replica"], r["tp_rank"]) for r in g["ranks"])
assert g["attention_tp"] == 2 and g["replicas"] == 1 and tp == [(0, 0), (0, 1)], g
PY
  scancel "$job"
  wait_job_gone 30 || fail "job $job still running 30 s after scancel"
  no_shoal_left
  job=""
  { cat "$tmp/shoal.yaml"; printf 'parallel:\n  attention_tp: 4\n'; } > "$bad_yaml"
  job=$(cd "$tmp" && sbatch --parsable "${SBATCH_ARGS[@]}" --output="$tmp/tp4.out" \
          "$root/deploy/slurm/shoal.sbatch" "$bad_yaml")
  job_out=tp4.out
  wait_job_gone 30 || fail "the job with attention_tp 4 over 2 tasks did not end"
  grep -q "attention_tp = 4 does not divide the 2 ranks" "$tmp/tp4.out" || fail "attention_tp 4 over 2 tasks was not refused by name"
  no_shoal_left
  echo "ok   parallel.attention_tp: 2 in a Slurm job serves as one replica of two TP ranks; 4 over 2 tasks is refused"
  job=""
}
