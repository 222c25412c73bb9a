#!/usr/bin/env bash
# Serving on one GPU, end to end: the coordinator (shoal serve), one GPU worker that joins it without
# MPI, one chat request through curl, then `shoal bench serve` at three concurrencies. Run by
# scripts/gpu-check.sh on a device machine; usable by hand on any machine with a GPU.
#
#   bash scripts/gpu-serve-check.sh SHOAL_BINARY LOG_DIR [CONFIG]
#
# Writes serve.log, worker.log, request.json, bench.json and metrics.txt under LOG_DIR. Exit 0 when
# the group came up, answered the request and every benchmark run completed its requests; 77 when
# there is no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
shoal=${1:?usage: gpu-serve-check.sh SHOAL_BINARY LOG_DIR [CONFIG]}
dir=${2:?usage: gpu-serve-check.sh SHOAL_BINARY LOG_DIR [CONFIG]}
config=${3:-configs/local-gpu.yaml}
mkdir -p "$dir"
if ! nvidia-smi -L >/dev/null 2>&1; then echo "SKIP: no GPU (nvidia-smi -L failed)"; exit 77; fi
port=18080 control=18081
# The join secret the worker presents (shoal serve requires one; it would make one up otherwise).
export SHOAL_CONTROL_TOKEN=${SHOAL_CONTROL_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
rm -f "$dir/url"
"$shoal" serve --config "$config" --port "$port" --control-port "$control" --print-url "$dir/url" \
  > "$dir/serve.log" 2>&1 &
serve_pid=$!
"$shoal" worker --config "$config" --device cuda --coordinator "127.0.0.1:$control" --rank 0 --world-size 1 \
  > "$dir/worker.log" 2>&1 &
worker_pid=$!
cleanup() {
  kill -TERM "$worker_pid" "$serve_pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$worker_pid" 2>/dev/null || kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$worker_pid" "$serve_pid" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT

for _ in $(seq 1 120); do
  [ -s "$dir/url" ] && break
  kill -0 "$worker_pid" 2>/dev/null && kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.5
done
if [ ! -s "$dir/url" ]; then
  echo "FAILED: the group was not ready within 60 s"
  echo "--- serve.log"; tail -20 "$dir/serve.log"; echo "--- worker.log"; tail -20 "$dir/worker.log"
  exit 1
fi
url=$(cat "$dir/url")
echo "ready at $url"
grep -m3 -i "cuda\|device\|weights" "$dir/worker.log"

# One chat request through a plain HTTP client.
if ! curl -sS --max-time 60 "$url/v1/chat/completions" -H 'Content-Type: application/json' \
     -d '{"model": "shoal-demo", "messages": [{"role": "user", "content": "In the beginning"}], "max_tokens": 32, "temperature": 0}' \
     > "$dir/request.json"; then
  echo "FAILED: the chat request"; exit 1
fi
if ! grep -q '"content"' "$dir/request.json"; then
  echo "FAILED: no content in the answer: $(head -c 400 "$dir/request.json")"; exit 1
fi
echo "chat answer: $(head -c 300 "$dir/request.json")"

# Load at three concurrencies (each run's JSON appended to one file by --save-json per run).
rc=0
for c in 1 16 128; do
  n=$((c * 4 < 16 ? 16 : c * 4))
  if ! "$shoal" bench serve --url "$url" --model models/demo-kjv-moe --random-input-len 128 \
       --random-output-len 128 --num-prompts "$n" --max-concurrency "$c" --seed 1 --quiet \
       --save-json "$dir/bench-c$c.json" > "$dir/bench-c$c.log" 2>&1; then
    echo "FAILED: bench serve at concurrency $c"; tail -5 "$dir/bench-c$c.log"; rc=1
  fi
  echo "--- concurrency $c ($n requests)"; tail -25 "$dir/bench-c$c.log"
done
curl -sS --max-time 10 "$url/metrics" > "$dir/metrics.txt" 2>&1
exit $rc
