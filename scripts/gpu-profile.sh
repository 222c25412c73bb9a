#!/usr/bin/env bash
# Per-kernel GPU time of decode steps, from Nsight Compute's hardware timer (ncu, the clocks left as
# found): where a decode step's time goes, kernel by kernel. Run on a device machine with the bundle
# of scripts/gpu-bundle.sh carried (build-gpu/bundle.tar.xz).
#
#   bash scripts/gpu-profile.sh [BATCH] [LAYERS] [EXPERIMENTAL]   # defaults 1, 2 and 0 (1: the
#                                                                  # engine.experimental_gpu_kernels path)
#
# Profiles the timed decode steps of gpu_decode_bench's default path at one batch size (every kernel,
# graph nodes one by one; ncu serialises them, so the sum is kernel time without the gaps between
# launches), then prints a table by kernel name: launches per step, µs per launch, µs per step, share.
# Writes profile.csv (raw ncu CSV) and profile.txt to $OUT (or /tmp/shoal-gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
batch=${1:-1}
layers=${2:-2}
experimental=${3:-0}
steps=8
out=${OUT:-/tmp/shoal-gpu-out}
mkdir -p "$out"
dir=/tmp/shoal-profile-bundle
rm -rf "$dir" && mkdir -p "$dir" && tar -C "$dir" -xJf build-gpu/bundle.tar.xz || { echo "no bundle"; exit 1; }
nccl=$(python3 -c 'import importlib.util as u; s = u.find_spec("nvidia.nccl"); print(s.submodule_search_locations[0] + "/lib" if s else "")' 2>/dev/null)
export LD_LIBRARY_PATH="$dir/bundle/lib:/usr/local/cuda/lib64${nccl:+:$nccl}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
timeout -k 5 240 ncu --clock-control none --profile-from-start off --graph-profiling node \
  --metrics gpu__time_duration.sum --csv \
  "$dir/bundle/bin/gpu_decode_bench" --layers "$layers" --steps "$steps" --batches "$batch" --profile 1 --experimental "$experimental" \
  > "$out/profile.csv" 2> "$out/profile.err"
echo "ncu exit $? ($(wc -l < "$out/profile.csv") lines); stderr tail:"
tail -3 "$out/profile.err"
python3 - "$out/profile.csv" $((steps - 2)) "$layers" <<'PY' | tee "$out/profile.txt"
import collections, csv, sys
path, steps, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, newline="") as f:
    lines = [l for l in f if l.startswith('"')]
by = collections.OrderedDict()
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "nsecond")
    us = v / 1000 if unit in ("nsecond", "ns") else v if unit in ("usecond", "us") else v * 1000
    name = r["Kernel Name"].split("(")[0][:58]
    c, t = by.get(name, (0, 0.0))
    by[name] = (c + 1, t + us)
total = sum(t for c, t in by.values())
print(f"{steps} decode steps of {layers} layers: {total / steps:.1f} us of kernel time per step")
print(f"{'kernel':58s} {'per step':>8s} {'us each':>8s} {'us/step':>8s} {'share':>6s}")
for name, (c, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:58s} {c / steps:8.1f} {t / c:8.2f} {t / steps:8.1f} {100 * t / total:5.1f}%")
PY
