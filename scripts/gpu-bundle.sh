#!/usr/bin/env bash
# Builds the GPU test and benchmark programs here (Release, sm_90, nvcc 13.0 like the device
# machines) and packs them, stripped, with the shared libraries they need from this machine's Debian
# packages into one compressed file, build-gpu/bundle.tar.xz — for a device machine whose image has
# CUDA, cuBLAS and NCCL but not shoal's Debian dependencies (yaml-cpp, GoogleTest, ...) and no
# network to install them. scripts/gpu-check.sh unpacks and runs it there.
#
#     bash scripts/gpu-bundle.sh          # then run gpu-check.sh with carry ["build-gpu/bundle.tar.xz"]
#
# The device tool carries at most 64 MiB (the working tree plus the carried paths): this script
# prints both sizes and fails when together they pass 60 MiB. It also checks the bundle as the
# device will load it: `ldd -r` on every binary with the bundle's libraries first must resolve every
# library and symbol (here the CUDA libraries come from /usr/local/cuda; on the device from its own).
#
# Environment: SHOAL_GPU_BUILD_DIR (default build-gpu; `build` reuses the main build when it has the
# CUDA parts), SHOAL_JOBS (default 2). The bundle is always build-gpu/bundle.tar.xz.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SHOAL_GPU_BUILD_DIR:-build-gpu}
targets="cuda_ops_test cuda_moe_test cuda_gemm_test cuda_engine_test nccl_group_test gpu_kernels_bench gpu_decode_bench shoal"
limit_mib=60

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHOAL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSHOAL_BUILD_FUZZ=OFF >/dev/null
fi
ninja -C "$build" -j"${SHOAL_JOBS:-2}" $targets

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bundle/bin" "$stage/bundle/lib"
for t in $targets; do
  src=$(find "$build" -name "$t" -type f -perm -u+x | head -1)
  [ -n "$src" ] || { echo "gpu-bundle: $t was not built in $build" >&2; exit 1; }
  # Symbols off, the device code (.nv_fatbin) and everything the loader needs stay.
  strip --strip-unneeded -o "$stage/bundle/bin/$t" "$src"
done
# Libraries from this machine's packages: everything ldd resolves outside glibc, the C++ runtime and
# the CUDA libraries (the device has its own, matching its driver).
for bin in "$stage"/bundle/bin/*; do
  ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      libcuda.so*|libcudart*|libcublas*|libnccl*|libnvidia*) ;;
      *) cp -Ln "$lib" "$stage/bundle/lib/" ;;
    esac
  done
done

# The sources the binaries were built from, by content: gpu-check.sh recomputes this over the same
# files on the device (which has the working tree but maybe no git) to know the bundle is current.
git ls-files -co --exclude-standard -- '*.cc' '*.cu' '*.h' '*.txt' '*.cmake' | LC_ALL=C sort > "$stage/bundle/SOURCE_FILES"
xargs -d '\n' sha1sum < "$stage/bundle/SOURCE_FILES" | sha1sum | cut -d' ' -f1 > "$stage/bundle/SOURCE_SHA1"
{ git rev-parse HEAD; git diff --quiet HEAD -- . 2>/dev/null || echo "(with uncommitted changes)"; } > "$stage/bundle/COMMIT"

# The check the device repeats first: every library and symbol resolves with the bundle's libraries.
bad=0
for bin in "$stage"/bundle/bin/*; do
  if LD_LIBRARY_PATH="$stage/bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd -r "$bin" 2>&1 |
       grep -E "not found|undefined symbol"; then
    echo "gpu-bundle: $(basename "$bin") does not resolve against the bundle" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] || exit 1
echo "gpu-bundle: ldd -r resolves every binary against the bundle"

mkdir -p build-gpu
XZ_OPT=-9 tar -C "$stage" -cJf build-gpu/bundle.tar.xz bundle
bundle_bytes=$(stat -c %s build-gpu/bundle.tar.xz)
# What the device tool sends: tracked files and untracked files git does not ignore.
tree_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$((bundle_bytes + tree_bytes))
printf 'gpu-bundle: %s (%s MiB) from %s; working tree %s MiB; together %s MiB of the %s MiB allowed here\n' \
  build-gpu/bundle.tar.xz "$(awk -v b="$bundle_bytes" 'BEGIN {printf "%.1f", b / 1048576}')" "$(head -1 "$stage/bundle/COMMIT")" \
  "$(awk -v b="$tree_bytes" 'BEGIN {printf "%.1f", b / 1048576}')" "$(awk -v b="$total" 'BEGIN {printf "%.1f", b / 1048576}')" "$limit_mib"
tar -tvJf build-gpu/bundle.tar.xz | awk '{printf "  %10s  %s\n", $3, $6}'
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
  echo "gpu-bundle: FAILED: tree + bundle exceed $limit_mib MiB; the device tool would refuse the run" >&2
  exit 1
fi
