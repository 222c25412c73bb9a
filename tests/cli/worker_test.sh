#!/usr/bin/env bash
# `shoal worker --batch` end to end under mpirun at 1-4 ranks: for every fixture, the JSONL results
# rank 0 writes carry exactly the greedy tokens HF transformers produced (expected.json), in input
# order — with more requests than one rank's engine.max_num_seqs (so ranks run waves), rank counts
# that do not divide the experts, and more ranks than experts (replicas). A rank stopped mid-run makes
# the others fail naming it and end the job. Bad input: every rank exits promptly with a named error.
set -euo pipefail
shoal=$1
root=$2
mpirun=${3:-mpirun}
export OMPI_MCA_mpi_yield_when_idle=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { "$mpirun" --allow-run-as-root --oversubscribe -np "$@"; }

# engine.max_num_seqs 2 with 6 requests: at N = 1 and 2 a rank runs its requests in two or three waves;
# max_step_tokens 5 feeds the 7- and 12-token prompts in chunks, in lockstep with the other ranks.
cat > "$tmp/small.yaml" <<YAML
engine:
  threads: 1
  max_num_seqs: 2
  max_step_tokens: 5
kv_cache:
  block_size: 4
  memory_mib: 8
parallel:
  collective_timeout_ms: 60000
YAML

fail=0
for dir in "$root"/tests/fixtures/*/; do
  [ -f "$dir/expected.json" ] || continue  # tokenizer and chat-template fixtures are not models
  name=$(basename "$dir")
  python3 - "$dir" "$tmp/$name.jsonl" "$tmp/$name.want" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1] + "/expected.json"))
with open(sys.argv[2], "w") as f, open(sys.argv[3], "w") as w:
    for rep in range(2):
        for i, p in enumerate(meta["prompts"]):
            n = len(p["greedy_tokens"]) - rep * 2   # the second copy stops earlier
            f.write(json.dumps({"id": f"{rep}-{i}", "prompt_ids": p["prompt_ids"], "max_tokens": n}) + "\n")
            w.write(json.dumps({"id": f"{rep}-{i}", "tokens": p["greedy_tokens"][:n]}) + "\n")
PY
  for np in 1 2 3 4; do
    if ! run "$np" "$shoal" worker --config "$tmp/small.yaml" --model "$dir" --batch "$tmp/$name.jsonl" \
         --output "$tmp/out.jsonl" 2>"$tmp/err.txt"; then
      echo "FAIL $name np=$np: exit status $?"; cat "$tmp/err.txt"; fail=1; continue
    fi
    got=$(python3 -c 'import json,sys; [print(json.dumps({"id": r["id"], "tokens": r["tokens"]})) for r in map(json.loads, open(sys.argv[1]))]' "$tmp/out.jsonl")
    if [ "$got" != "$(cat "$tmp/$name.want")" ]; then
      echo "FAIL $name np=$np: expected"; cat "$tmp/$name.want"; echo "got"; echo "$got"; fail=1
    else
      echo "ok   $name np=$np"
    fi
  done
done

# Attention TP (--tensor-parallel-size T, D = N / T replicas): request i to replica i mod D, run by its
# T ranks together; greedy tokens still transformers'. Models with a shared expert and a dense layer
# (qwen2-moe), a wide dense MLP (llama4-maverick), 2 kv heads over 4 ranks (mixtral, maverick), and MLA
# heads over a replicated latent cache (deepseek-v3).
for name in qwen2-moe-f16 llama4-maverick-f32 mixtral-bf16 deepseek-v3-bf16; do
  dir="$root/tests/fixtures/$name"
  for layout in "2 2" "4 2" "4 4"; do
    set -- $layout
    if ! run "$1" "$shoal" worker --config "$tmp/small.yaml" --model "$dir" --batch "$tmp/$name.jsonl" \
         --tensor-parallel-size "$2" --output "$tmp/out.jsonl" 2>"$tmp/err.txt"; then
      echo "FAIL $name np=$1 tp=$2: exit status $?"; cat "$tmp/err.txt"; fail=1; continue
    fi
    got=$(python3 -c 'import json,sys; [print(json.dumps({"id": r["id"], "tokens": r["tokens"]})) for r in map(json.loads, open(sys.argv[1]))]' "$tmp/out.jsonl")
    if [ "$got" != "$(cat "$tmp/$name.want")" ] || ! grep -q "attention TP rank" "$tmp/err.txt"; then
      echo "FAIL $name np=$1 tp=$2: expected"; cat "$tmp/$name.want"; echo "got"; echo "$got"; cat "$tmp/err.txt"; fail=1
    else
      echo "ok   $name np=$1 tp=$2"
    fi
  done
done
# FP8 weights are not split yet, and T must divide the ranks: both refused by name on every rank.
if run 2 "$shoal" worker --config "$tmp/small.yaml" --model "$root/tests/fixtures/deepseek-v3-fp8" \
     --batch "$tmp/deepseek-v3-fp8.jsonl" --tensor-parallel-size 2 >/dev/null 2>"$tmp/err.txt" ||
   [ "$(grep -c "FP8 checkpoints are not split" "$tmp/err.txt")" -lt 2 ]; then
  echo "FAIL deepseek-v3-fp8 tp=2 was not refused on both ranks"; cat "$tmp/err.txt"; fail=1
else
  echo "ok   deepseek-v3-fp8 tp=2 refused"
fi
if run 3 "$shoal" worker --config "$tmp/small.yaml" --model "$root/tests/fixtures/mixtral-bf16" \
     --batch "$tmp/mixtral-bf16.jsonl" --tensor-parallel-size 2 >/dev/null 2>"$tmp/err.txt" ||
   ! grep -q "attention_tp 2 does not divide the 3 ranks" "$tmp/err.txt"; then
  echo "FAIL tp=2 over 3 ranks was not refused"; cat "$tmp/err.txt"; fail=1
else
  echo "ok   tp=2 over 3 ranks refused"
fi

# More ranks than experts: qwen2-moe-f16 has 5, so at N = 6 expert 0 has two replicas that take
# turns by token.
dir="$root/tests/fixtures/qwen2-moe-f16"
if run 6 "$shoal" worker --config "$tmp/small.yaml" --model "$dir" --batch "$tmp/qwen2-moe-f16.jsonl" \
     --output "$tmp/out.jsonl" 2>"$tmp/err.txt"; then
  got=$(python3 -c 'import json,sys; [print(json.dumps({"id": r["id"], "tokens": r["tokens"]})) for r in map(json.loads, open(sys.argv[1]))]' "$tmp/out.jsonl")
  if [ "$got" == "$(cat "$tmp/qwen2-moe-f16.want")" ] && grep -q "experts 0 of 5" "$tmp/err.txt"; then
    echo "ok   qwen2-moe-f16 np=6 (replicas)"
  else
    echo "FAIL qwen2-moe-f16 np=6 (replicas): got"; echo "$got"; cat "$tmp/err.txt"; fail=1
  fi
else
  echo "FAIL qwen2-moe-f16 np=6: exit status $?"; cat "$tmp/err.txt"; fail=1
fi

# A rank that stops (SIGSTOP, as a hung node would) mid-run: the others report which rank they were
# waiting for within parallel.collective_timeout_ms and end the job, instead of hanging.
cat > "$tmp/stall.yaml" <<YAML
engine:
  threads: 1
parallel:
  collective_timeout_ms: 1000
YAML
python3 -c 'import json,sys; [print(json.dumps({"prompt_ids": [1, 2, 3], "max_tokens": 200})) for _ in range(3000)]' \
  > "$tmp/long.jsonl"
"$mpirun" --allow-run-as-root --oversubscribe -np 3 "$shoal" worker --config "$tmp/stall.yaml" \
  --model "$root/tests/fixtures/qwen3-moe-f32" --batch "$tmp/long.jsonl" --output "$tmp/long.out" \
  >/dev/null 2>"$tmp/stall.err" &
launcher=$!
for _ in $(seq 1 600); do  # until every rank has loaded (its line is printed after the start-up barrier)
  [ "$(grep -c '\] started: ' "$tmp/stall.err")" -ge 3 ] && break
  sleep 0.05
done
victim=$(pgrep -P "$launcher" -x shoal | tail -n 1)
kill -STOP "$victim"
stopped=$(date +%s)
for _ in $(seq 1 600); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$launcher" 2>/dev/null; then
  echo "FAIL stalled rank: the group was still running 60 s after one rank stopped"; fail=1
  kill -KILL "$launcher" 2>/dev/null || true
fi
kill -KILL "$victim" 2>/dev/null || true
set +e; wait "$launcher"; rc=$?; set -e
took=$(( $(date +%s) - stopped ))
if [ $rc -ne 0 ] && [ $took -le 30 ] && grep -q "still waiting for ranks" "$tmp/stall.err" \
   && grep -q "ends the job" "$tmp/stall.err"; then
  echo "ok   stalled rank: the others failed in ${took} s naming it (rc=$rc)"
else
  echo "FAIL stalled rank: rc=$rc after ${took} s:"; cat "$tmp/stall.err"; fail=1
fi

# Bad input: exit status non-zero, the error named, and no rank left waiting for a timeout.
expect_failure() {  # expected-substring, command...: fails promptly (not a timeout) saying it
  local want=$1; shift
  set +e
  out=$(timeout 60 "$@" 2>&1)
  rc=$?
  set -e
  if [ $rc -eq 0 ] || [ $rc -eq 124 ] || ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL error case ($*): rc=$rc, output: $out"; fail=1
  else
    echo "ok   error: $want"
  fi
}
check_error() {  # expected-substring, np, worker args... (under mpirun)
  local want=$1 np=$2; shift 2
  expect_failure "$want" "$mpirun" --allow-run-as-root --oversubscribe -np "$np" "$shoal" worker "$@"
}
model="$root/tests/fixtures/qwen3-moe-f32"
printf '{"prompt_ids": [1, 2]}\n{"prompt_ids": [1, 99999]}\n' > "$tmp/bad.jsonl"
check_error "bad.jsonl:2: prompt_ids[1]: must be in [0, 319]" 3 --model "$model" --batch "$tmp/bad.jsonl"
check_error "cannot open batch file" 2 --model "$model" --batch "$tmp/missing.jsonl"
check_error "config.json: cannot open" 2 --model /nonexistent --batch "$tmp/bad.jsonl"
check_error "give exactly one of --coordinator" 1 --model "$model"
check_error "not reachable within 1000 ms" 2 --model "$model" --coordinator 127.0.0.1:1 --connect-timeout 1
printf '{"prompt_ids": [1, 2], "max_tokens": 255}\n' > "$tmp/long1.jsonl"
check_error "exceed the model's context of 256 tokens" 2 --model "$model" --batch "$tmp/long1.jsonl"
# --device: a bad value, and the GPU engine where there is no GPU (or no CUDA in this build), on 2 ranks:
# every rank ends with the error (through the engine-start agreement), none waits for a timeout.
printf '{"prompt_ids": [1, 2]}\n' > "$tmp/one.jsonl"
check_error "expected cpu, cuda or cuda:N" 2 --model "$model" --batch "$tmp/one.jsonl" --device tpu
if ! nvidia-smi >/dev/null 2>&1; then
  check_error "CUDA" 2 --model "$model" --batch "$tmp/one.jsonl" --device cuda  # no usable CUDA device / built without CUDA
fi
# Launches without MPI (--rank/--world-size): the flags are checked before anything starts.
check_plain_error() {  # expected-substring, worker args... (no mpirun)
  local want=$1; shift
  expect_failure "$want" "$shoal" worker "$@"
}
check_plain_error "--rank and --world-size go together" --model "$model" --coordinator 127.0.0.1:1 --rank 0
check_plain_error "--rank 2 is not below --world-size 2" --model "$model" --coordinator 127.0.0.1:1 --rank 2 --world-size 2
check_plain_error "need --coordinator HOST:PORT" --model "$model" --batch "$tmp/one.jsonl" --rank 0 --world-size 1
check_plain_error "so it needs --device cuda" --model "$model" --coordinator 127.0.0.1:1 --rank 0 --world-size 2 --device cpu

# shoal bench a2a --json on 2 ranks of this one host: correct rows, the job's shape recorded, and
# `shoal plan --calibrate` refusing it for net_eff (one host measures shared memory, not the network).
if run 2 "$shoal" bench a2a --hidden 64 --topk 2 --experts 8 --max-tokens 8 --seconds 0.01 --json "$tmp/a2a.json" \
     > "$tmp/a2a.txt" 2>&1 &&
   python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(not (j["ok"] and j["ranks"] == 2 and j["hosts"] == 1 and len(j["results"]) == 4))' "$tmp/a2a.json"; then
  echo "ok   bench a2a --json records 4 sizes, 2 ranks on 1 host"
else
  echo "FAIL bench a2a --json"; cat "$tmp/a2a.txt"; fail=1
fi
expect_failure "measures shared memory, not the network" "$shoal" plan --preset deepseek-v3 --hardware h100 --calibrate "$tmp/a2a.json"

# shoal bench balance replaying the demo model's recorded load on 3 ranks: the planner's placements
# (with spare slots) spread the rows the start-up placement piles onto one rank.
if run 3 "$shoal" bench balance --load "$root/docs/bench/demo-kjv-moe-expert-load.json" --topk 2 --hidden 64 \
     --intermediate 32 --tokens 64 --steps 2 --warmup 0 --json "$tmp/balance.json" > "$tmp/balance.txt" 2>&1 &&
   python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; sys.exit(not (r[0]["placement"] == "balanced" and len(r) >= 3 and r[0]["measured_max_mean"] > 1.3 and r[-1]["measured_max_mean"] < 1.15 and r[-1]["redundant"] > 0))' "$tmp/balance.json"; then
  echo "ok   bench balance: planned placements even out the demo model's recorded load"
else
  echo "FAIL bench balance"; cat "$tmp/balance.txt"; cat "$tmp/balance.json"; fail=1
fi
exit $fail
