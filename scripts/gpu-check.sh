#!/usr/bin/env bash
# The one GPU run (a lent H100/H200, minutes of device time): build, correctness, benchmarks, and a
# short table last. Must finish in under 8 minutes.
#
#   1. Build: a Release build for sm_90 with every core, when the machine has shoal's dependencies;
#      otherwise the bundle scripts/gpu-bundle.sh built (carry build-gpu/bundle with the run).
#   2. gpu tests: every CUDA op against the CPU backend (fresh random inputs, poisoned outputs), the
#      fixtures' logits through the GPU engine against transformers, the NCCL group at one rank.
#   3. Benchmarks: device copy bandwidth (the roofline), permute/unpermute, decode and prefill expert
#      GEMMs, single-GPU decode of a ~10 GB synthetic MoE — each as a ratio measured in the same run.
# Logs and JSON go to $OUT (the device tool brings them back) or /tmp/shoal-gpu-out.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/shoal-gpu-out}
mkdir -p "$out"
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"

bin=""
if cmake -S . -B build-gpu-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHOAL_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES=90 > "$out/configure.log" 2>&1; then
  echo "== building on the device ($(nproc) cores)"
  if timeout 240 ninja -C build-gpu-device -j"$(nproc)" cuda_ops_test cuda_engine_test nccl_group_test \
       gpu_kernels_bench gpu_decode_bench > "$out/build.log" 2>&1; then
    bin=$(mktemp -d)
    for t in cuda_ops_test cuda_engine_test nccl_group_test gpu_kernels_bench gpu_decode_bench; do
      cp "$(find build-gpu-device -name "$t" -type f -perm -u+x | head -1)" "$bin/"
    done
  else
    echo "device build failed (tail of $out/build.log):"; tail -20 "$out/build.log"
  fi
fi
if [ -z "$bin" ] && [ -d build-gpu/bundle/bin ]; then
  echo "== no build here (missing dependencies: see $out/configure.log); using build-gpu/bundle from commit $(cat build-gpu/bundle/COMMIT)"
  bin=build-gpu/bundle/bin
  export LD_LIBRARY_PATH="$PWD/build-gpu/bundle/lib:${LD_LIBRARY_PATH:-}"
fi
if [ -z "$bin" ]; then
  echo "FAILED: nothing to run (no build and no build-gpu/bundle)"; exit 1
fi
# The image's NCCL may live in the nvidia-nccl wheel rather than the toolkit.
nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(os.path.dirname(nvidia.nccl.__file__), "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${nccl_dir:+$nccl_dir:}${LD_LIBRARY_PATH:-}"
export SHOAL_SOURCE_DIR="$PWD"

declare -a rows
budget=470  # seconds for the whole script (the lease's 8 minutes, with margin for start-up)
run() {  # name timeout_s command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  local left=$(( budget - (t0 - start) ))
  if [ "$left" -lt 10 ]; then
    rows+=("$(printf '%-20s %-14s %4ss' "$name" "NOT RUN(budget)" 0)"); echo "== $name: not run, the 8-minute budget is spent"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local verdict=PASS
  case $rc in 0) ;; 77) verdict=SKIP ;; 124) verdict="TIMEOUT(${limit}s)" ;; *) verdict="FAIL(rc=$rc)" ;; esac
  rows+=("$(printf '%-20s %-14s %4ss' "$name" "$verdict" $(( $(date +%s) - t0 )))")
  echo "== $name: $verdict"; tail -25 "$out/$name.log"
}
run cuda_ops_test 90 "$bin/cuda_ops_test"
run cuda_engine_test 90 "$bin/cuda_engine_test"
run nccl_group_test 45 "$bin/nccl_group_test"
run gpu_kernels_bench 90 "$bin/gpu_kernels_bench" --json "$out/kernels.json"
run gpu_decode_bench 150 "$bin/gpu_decode_bench" --json "$out/decode.json"

echo
echo "== shoal gpu-check on $(head -2 "$out/gpu.txt" | tail -1), $(( $(date +%s) - start )) s"
printf '%s\n' "${rows[@]}"
grep -E "^\|" "$out/gpu_kernels_bench.log" 2>/dev/null | tail -12
grep -A8 "^batch" "$out/gpu_decode_bench.log" 2>/dev/null
