#!/usr/bin/env bash
# `shoal plan` as a user runs it: --model is a checkpoint (a preset name there is pointed to
# --preset), --sweep marks a cheapest layout, and --emit-config writes a config that shoal itself
# loads (`shoal serve --print-config`), with the sbatch line to run it.
#   plan_test.sh SHOAL_BINARY SOURCE_DIR
set -euo pipefail
shoal=$1
root=$2
tmp=$(mktemp -d /tmp/shoal-plan-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL $*"; exit 1; }

if "$shoal" plan --model deepseek-v3 >"$tmp/out" 2>&1; then fail "plan --model PRESET succeeded"; fi
grep -q "a preset: use --preset deepseek-v3" "$tmp/out" || fail "plan --model PRESET does not point to --preset: $(cat "$tmp/out")"
echo "ok   plan --model with a preset name says to use --preset"

fixture=$root/tests/fixtures/deepseek-v3-fp8
"$shoal" plan --model "$fixture" --tpot-ms 50 --sweep --emit-config "$tmp/plan.yaml" >"$tmp/out" 2>&1 ||
  fail "plan --sweep --emit-config: $(cat "$tmp/out")"
grep -q "WARNING  weights fp8 (config.json quantization_config: fp8)" "$tmp/out" ||
  fail "the weight dtype was not read from the checkpoint: $(head -5 "$tmp/out")"
grep -q "^sweep " "$tmp/out" || fail "no sweep table"
grep -q '^\*' "$tmp/out" || fail "no layout marked cheapest: $(cat "$tmp/out")"
grep -q "sbatch --nodes=1 --ntasks=1 --gpus-per-task=1 deploy/slurm/shoal.sbatch $tmp/plan.yaml" "$tmp/out" ||
  fail "no sbatch line: $(tail -3 "$tmp/out")"
echo "ok   plan --model CHECKPOINT --sweep: weight dtype from the checkpoint, a cheapest layout, the sbatch line"

"$shoal" serve --config "$tmp/plan.yaml" --print-config >"$tmp/effective" 2>&1 || fail "the emitted config does not load: $(cat "$tmp/effective")"
grep -q "path: $fixture" "$tmp/effective" || fail "the emitted config lacks the model path: $(cat "$tmp/effective")"
grep -q "device: cuda" "$tmp/effective" || fail "the emitted config is not for GPUs"
grep -q "ranks_per_group: 1" "$tmp/effective" || fail "the emitted config's group size is not the chosen layout's"
echo "ok   --emit-config wrote a config shoal loads (model path, device cuda, the layout's group)"
