#!/usr/bin/env bash
# `shoal generate` end to end: for every fixture, greedy tokens printed by the binary equal the ones
# HF transformers produced (expected.json), with all prompts in one batch; and bad input exits 1 with an
# error naming the problem.
set -euo pipefail
shoal=$1
root=$2
fail=0
for dir in "$root"/tests/fixtures/*/; do
  [ -f "$dir/expected.json" ] || continue  # tokenizer and chat-template fixtures are not models
  name=$(basename "$dir")
  mapfile -t args < <(python3 - "$dir" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1] + "/expected.json"))
for p in meta["prompts"]:
    print("--prompt-ids")
    print(",".join(map(str, p["prompt_ids"])))
print("--max-tokens")
print(len(meta["prompts"][0]["greedy_tokens"]))
PY
)
  expected=$(python3 -c 'import json,sys; [print(" ".join(map(str,p["greedy_tokens"]))) for p in json.load(open(sys.argv[1]+"/expected.json"))["prompts"]]' "$dir")
  got=$("$shoal" generate --model "$dir" --threads 2 "${args[@]}" 2>/dev/null | sed -n 's/^prompt [0-9]*: \(.*\)  \[length\]$/\1/p')
  if [ "$got" != "$expected" ]; then
    echo "FAIL $name: expected"; echo "$expected"; echo "got"; echo "$got"; fail=1
  else
    echo "ok   $name"
  fi
done
# Bad input: a clear error and exit status 1.
check_error() {  # expected-substring, args...
  local want=$1; shift
  set +e
  out=$("$shoal" generate "$@" 2>&1)
  rc=$?
  set -e
  if [ $rc -ne 1 ] || ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL error case ($*): rc=$rc, output: $out"; fail=1
  else
    echo "ok   error: $want"
  fi
}
check_error "config.json: cannot open" --model /nonexistent --prompt-ids 1,2
check_error "not a token id" --model "$root/tests/fixtures/qwen3-moe-f32" --prompt-ids 1,x
check_error "outside the vocabulary" --model "$root/tests/fixtures/qwen3-moe-f32" --prompt-ids 1,99999
check_error "no prompt" --model "$root/tests/fixtures/qwen3-moe-f32"
check_error "expected cpu, cuda or cuda:N" --model "$root/tests/fixtures/qwen3-moe-f32" --prompt-ids 1 --device tpu
# --device cuda where there is no GPU (or no CUDA in this build): a clear error, not a crash.
if ! nvidia-smi >/dev/null 2>&1; then
  set +e
  out=$("$shoal" generate --model "$root/tests/fixtures/qwen3-moe-f32" --prompt-ids 1,2 --device cuda 2>&1)
  rc=$?
  set -e
  if [ $rc -eq 1 ] && grep -qE "no CUDA device|built without CUDA" <<<"$out"; then
    echo "ok   error: --device cuda without a GPU: $out"
  else
    echo "FAIL --device cuda without a GPU: rc=$rc, output: $out"; fail=1
  fi
fi
exit $fail
