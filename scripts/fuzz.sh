#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into build-fuzz/ and runs each for
# SHOAL_FUZZ_SECONDS (default 60) each on a copy of the committed corpus. New crashes land in build-fuzz/.
# SHOAL_FUZZ_TARGETS (space-separated, e.g. "http_request jinja") picks a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SHOAL_FUZZ_SECONDS:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_CUDA=OFF \
  -DSHOAL_BUILD_FUZZ=ON -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_BENCH=OFF >/dev/null
read -r -a targets <<<"${SHOAL_FUZZ_TARGETS:-safetensors_header model_config batch_file control_frame openai_request tokenizer jinja http_request json_schema}"
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/%/_fuzz}"
for t in "${targets[@]}"; do
  work=build-fuzz/corpus-$t
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  echo "== $t"
  ./build-fuzz/tests/fuzz/"$t"_fuzz -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix=build-fuzz/"$t"- "$work" 2>&1 | tail -n 5
done
