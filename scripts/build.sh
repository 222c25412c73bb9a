#!/usr/bin/env bash
# Configures and builds shoal (Release) into ./build. With --prefix DIR it then installs the binary
# (DIR/bin/shoal), the configs, the Slurm script and the demo model (DIR/share/shoal/) there; an
# installed `shoal up` finds its default config beside its own bin/. Other arguments go to cmake's
# configure step, e.g. scripts/build.sh -DSHOAL_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${SHOAL_BUILD_JOBS:-$(nproc)}
prefix=""
configure=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "build.sh: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    *) configure+=("$1"); shift ;;
  esac
done
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${configure[@]}"
cmake --build build -j "$jobs"
if [ -n "$prefix" ]; then
  cmake --install build --prefix "$prefix"
fi
