#!/usr/bin/env bash
# shoal's CPU decode against llama.cpp on the same checkpoint, threads and machine, in one run.
#
# llama.cpp is built from the sources vendored in the llama-cpp-python sdist on PyPI (this project's
# machines reach PyPI and Debian only) into a scratch directory — never part of shoal's build or CI.
# The Hugging Face checkpoint is converted with llama.cpp's own convert_hf_to_gguf.py at the same
# dtype shoal reads (bf16). Then, alternating the two RUNS times:
#   llama.cpp: llama-batched-bench -npp PROMPT -ntg GEN -npl 1,16 (text-generation tokens/s, S_TG)
#   shoal:     shoal generate, 1 and 16 prompts of PROMPT tokens, GEN new tokens (decode tokens/s)
# and prints every run, the medians and shoal ÷ llama.cpp at batch 1 and 16.
#
#   bench/llama_cpp_compare.sh SHOAL_BINARY MODEL_DIR [--threads N] [--runs N] [--python PY] [--work DIR]
#
# MODEL_DIR: e.g. the bench model of tools/reference/make_bench_model.py. PY needs torch, numpy and
# sentencepiece-free tokenizers support for the converter (a scratch venv with transformers works).
set -euo pipefail

SHOAL=${1:?usage: $0 SHOAL_BINARY MODEL_DIR [--threads N] [--runs N] [--python PY] [--work DIR]}
MODEL=${2:?usage: $0 SHOAL_BINARY MODEL_DIR ...}
shift 2
THREADS=2 RUNS=3 PY=python3 WORK=/tmp/shoal-llamacpp PROMPT=8 GEN=64
while [ $# -gt 0 ]; do
  case $1 in
    --threads) THREADS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
SHOAL=$(readlink -f "$SHOAL")
MODEL=$(readlink -f "$MODEL")
mkdir -p "$WORK"
cd "$WORK"

# 1. llama.cpp from the PyPI sdist (cached in WORK).
if [ ! -x build/bin/llama-batched-bench ]; then
  if [ ! -d src ]; then
    # The newest sdist, straight from PyPI's JSON API (pip download would build its metadata first).
    "$PY" -c '
import json, urllib.parse, urllib.request
api = "https://pypi.org/pypi/llama-cpp-python/json"
meta = json.load(urllib.request.urlopen(api))
sdist = [f for f in meta["urls"] if f["packagetype"] == "sdist"][0]
url = urllib.parse.urljoin(api, sdist["url"])  # a mirror may answer with relative links
print("llama-cpp-python", meta["info"]["version"], url)
urllib.request.urlretrieve(url, "sdist.tar.gz")
' >&2
    mkdir -p src
    tar -xzf sdist.tar.gz -C src --strip-components=1
  fi
  cmake -S src/vendor/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build build -j"$(nproc)" --target llama-batched-bench >&2
fi
LLAMA_SRC=$WORK/src/vendor/llama.cpp

# 2. The checkpoint as GGUF, bf16 like the safetensors.
GGUF=$WORK/$(basename "$MODEL")-bf16.gguf
if [ ! -f "$GGUF" ]; then
  # The bench model carries the tiny test tokenizer, whose pre-tokenizer hash llama.cpp does not list:
  # such a tokenizer falls back to Qwen2's splitting rules, which decide how text is split, not how
  # fast a step decodes. Known tokenizers convert as llama.cpp's script decides.
  PYTHONPATH=$LLAMA_SRC/gguf-py:$LLAMA_SRC "$PY" - "$MODEL" --outtype bf16 --outfile "$GGUF" >&2 <<EOF
import runpy, sys
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "qwen2"
base.TextModel.get_vocab_base_pre = pre
sys.argv[0] = "$LLAMA_SRC/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
EOF
fi

# 3. Alternate the two, RUNS times.
prompt_ids() {  # $1 = first token: PROMPT ids
  local ids=$1
  for ((i = 2; i <= PROMPT; i++)); do ids="$ids,$i"; done
  echo "$ids"
}
shoal_run() {  # $1 = batch → decode tokens/s
  local args=()
  for ((b = 1; b <= $1; b++)); do args+=(--prompt-ids "$(prompt_ids $((b + 10)))"); done
  "$SHOAL" generate --model "$MODEL" "${args[@]}" --max-tokens $((GEN + 1)) --threads "$THREADS" 2>&1 |
    sed -n 's/.*decode tokens in [0-9]* steps: \([0-9.]*\) tok\/s.*/\1/p'
}
llama_run() {  # → "batch1 batch16" S_TG tokens/s
  build/bin/llama-batched-bench -m "$GGUF" -t "$THREADS" -c 4096 -b 512 -ub 512 -npp "$PROMPT" -ntg "$GEN" \
    -npl 1,16 2>/dev/null | awk -F'|' '/^\|/ && $2 ~ /[0-9]/ {gsub(/ /, "", $4); gsub(/ /, "", $9); printf "%s ", $9} END {print ""}'
}
declare -a S1 S16 L1 L16
for ((r = 1; r <= RUNS; r++)); do
  read -r l1 l16 <<<"$(llama_run)"
  s1=$(shoal_run 1)
  s16=$(shoal_run 16)
  echo "run $r: llama.cpp batch 1 $l1 tok/s, batch 16 $l16 tok/s; shoal batch 1 $s1 tok/s, batch 16 $s16 tok/s"
  L1+=("$l1") L16+=("$l16") S1+=("$s1") S16+=("$s16")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
m_l1=$(median "${L1[@]}") m_l16=$(median "${L16[@]}") m_s1=$(median "${S1[@]}") m_s16=$(median "${S16[@]}")
echo "medians of $RUNS: llama.cpp $m_l1 / $m_l16 tok/s, shoal $m_s1 / $m_s16 tok/s (batch 1 / 16, $THREADS threads)"
awk -v a="$m_s1" -v b="$m_l1" -v c="$m_s16" -v d="$m_l16" \
  'BEGIN {printf "shoal / llama.cpp: batch 1 %.2fx, batch 16 %.2fx\n", a / b, c / d}'
