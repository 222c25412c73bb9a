#!/usr/bin/env bash
# Builds the GPU test and benchmark programs here (Release, sm_90, nvcc 13.0 like the device
# machines) into build-gpu/, and packs them with the shared libraries they need from this machine's
# Debian packages into build-gpu/bundle/ — for a device machine whose image has CUDA, cuBLAS and
# NCCL but not shoal's Debian dependencies (yaml-cpp, PCRE2, ...) and no network to install them.
# scripts/gpu-check.sh runs the bundle when it cannot configure a build on the device itself.
#
#     bash scripts/gpu-bundle.sh        # then carry build-gpu/bundle to the device
set -euo pipefail
cd "$(dirname "$0")/.."
targets="cuda_ops_test cuda_engine_test nccl_group_test gpu_kernels_bench gpu_decode_bench"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHOAL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DSHOAL_BUILD_FUZZ=OFF >/dev/null
ninja -C build-gpu -j"${SHOAL_JOBS:-2}" $targets
rm -rf build-gpu/bundle
mkdir -p build-gpu/bundle/bin build-gpu/bundle/lib
for t in $targets; do
  cp "$(find build-gpu -name "$t" -type f -perm -u+x | head -1)" build-gpu/bundle/bin/
done
# Libraries from this machine's packages: everything ldd resolves outside glibc and the CUDA
# toolkit (the device has its own CUDA libraries, which must match its driver).
for bin in build-gpu/bundle/bin/*; do
  ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      libcuda*|libcublas*|libnccl*|libnvidia*) ;;
      *) cp -Ln "$lib" build-gpu/bundle/lib/ ;;
    esac
  done
done
git rev-parse HEAD > build-gpu/bundle/COMMIT
du -sh build-gpu/bundle
ls build-gpu/bundle/bin build-gpu/bundle/lib
