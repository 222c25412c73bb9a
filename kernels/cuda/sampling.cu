// Greedy and stochastic token selection of the CUDA backend, one block per row.
//
// A row is too long for shared memory (vocabularies reach ~260k), so the kept set is described by a
// cut instead of being materialised: in the CPU's order (logit descending, ties → lower index) a cut
// keeps every logit above a threshold plus the tied ones at the threshold up to an index. Cuts are
// found with passes over the row held in global memory:
//   top-k  radix select on the logits' order-preserving 32-bit keys, 8 bits per pass, exact; ties at
//          the k-th value are kept lowest index first, as the CPU's partial_sort does
//   top-p  when the kept set (or, with top-k off or large, its top kCap) holds the nucleus, those
//          ≤ kCap tokens are sorted in shared memory and cut exactly like the CPU's loop; only a flat
//          distribution whose nucleus exceeds kCap tokens takes a bisection over the key space (one
//          pass per step, ≤ 32 steps), again keeping ties at the cut lowest index first
// The draw is inverse-CDF with one Philox uniform per row (curand_init(seed, 0, offset)). Every sum is
// accumulated in a fixed order (per lane in index order, then fixed trees), so a row's token depends
// only on its logits and its own seed/offset, never on the batch or on timing.
//
// NaN logits (a diverged model) are never kept, so never drawn: as on the CPU, which turns them into
// -inf. Temperatures below kGreedyBelowTemperature, and rows whose scaled maximum overflows, are greedy.
#include <cmath>
#include <cstdint>
#include <string>

#include <cuda_runtime.h>
#include <curand_kernel.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {
namespace {

constexpr int kSampleThreads = 1024;
constexpr int kArgMaxThreads = 256;
constexpr int kMaxWarps = 32;
constexpr int kGroup = 4;              // consecutive elements per lane per step (one 16-byte load)
constexpr int kStep = 32 * kGroup;     // elements per warp step
constexpr int kCap = 2048;             // largest kept set sorted in shared memory
constexpr int kCapPerLane = kCap / 32;
constexpr int kMaxVocab = 1 << 30;     // keeps every index and chunk bound in int
constexpr int64_t kMaxBlocks = int64_t{1} << 16;
constexpr uint32_t kAllLanes = 0xffffffffu;

// Order-preserving map of floats onto uint32. -0 maps as +0: the CPU compares them equal. Every NaN
// maps to 0, below -inf's key (0x007fffff) and no real float's key, and Kept() never keeps key 0; left
// to the bit pattern a positive NaN would rank above +inf and be kept first.
__device__ __forceinline__ uint32_t Key(float f) {
  uint32_t b = __float_as_uint(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return 0;
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float KeyValue(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ unsigned LaneMaskLt() {
  unsigned m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}

// A row as the block walks it: warp w owns the contiguous chunk [w·chunk, (w+1)·chunk), a multiple
// of kStep, and reads it kStep elements per step, lane l taking elements 4l..4l+3 of the step. So one
// warp's traversal is in index order, and warps' chunks are in index order too.
struct Row {
  const float* x;
  int vocab;
  int chunk;
  bool vec;  // the row start is 16-byte aligned and vocab % 4 == 0
};

__device__ Row MakeRow(const float* x, int vocab, bool vec) {
  const int warps = blockDim.x / 32;
  const int per_warp = (vocab + warps - 1) / warps;
  return Row{x, vocab, (per_warp + kStep - 1) / kStep * kStep, vec};
}

// Calls f(i, v, n) for the calling warp's groups: v[c] is element i + c for c < n (n may be 0 for the
// lanes past the end). Warp-uniform: every lane makes the same calls, so f may use warp collectives.
template <class F>
__device__ __forceinline__ void ForEachGroup(const Row& r, F&& f) {
  const int lane = threadIdx.x % 32;
  const int begin = static_cast<int>(threadIdx.x / 32) * r.chunk;
  const int end = min(r.vocab, begin + r.chunk);
  for (int s = begin; s < end; s += kStep) {
    const int i = s + lane * kGroup;
    const int n = max(0, min(kGroup, end - i));
    float v[kGroup];
    if (r.vec && n == kGroup) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(r.x + i));
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
#pragma unroll
      for (int c = 0; c < kGroup; ++c) v[c] = c < n ? __ldg(r.x + i + c) : 0.0f;
    }
    f(i, v, n);
  }
}

// Keep every key above `key`, and the ones equal to it whose index is ≤ `last`; never a NaN (key 0).
struct Cut {
  uint32_t key;
  int last;
};
__device__ __forceinline__ Cut KeepAll() { return Cut{0u, INT32_MAX}; }
__device__ __forceinline__ bool Kept(const Cut& c, uint32_t key, int i) {
  return key != 0u && (key > c.key || (key == c.key && i <= c.last));
}

struct Scratch {
  double wd[kMaxWarps];
  float wf[kMaxWarps];
  int wi[kMaxWarps];
  int result;
  int count;
  int bin, above, equal;
  double u;
};

struct SampleShared {
  unsigned long long sorted[kCap];  // key << 32 | ~index: descending = the CPU's order
  double cum[kCap];
  unsigned hist[256];
  Scratch s;
};

// Block-wide sums in a fixed order (lane tree, then warps in order), so the result is reproducible.
__device__ double BlockSum(double v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kAllLanes, v, o);
  if (threadIdx.x % 32 == 0) s.wd[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += s.wd[w];
  __syncthreads();
  return total;
}

__device__ int BlockSum(int v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kAllLanes, v, o);
  if (threadIdx.x % 32 == 0) s.wi[threadIdx.x / 32] = v;
  __syncthreads();
  int total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += s.wi[w];
  __syncthreads();
  return total;
}

struct Best {
  float value;
  int index;
};

// The CPU's ArgMax: the first index of the largest value; NaNs never win.
__device__ __forceinline__ void Merge(Best& a, float v, int i) {
  if (v > a.value || (v == a.value && i < a.index)) a = Best{v, i};
}

__device__ Best RowArgMax(const Row& row, Scratch& s) {
  Best b{-INFINITY, INT32_MAX};
  ForEachGroup(row, [&](int i, const float(&v)[kGroup], int n) {
    for (int c = 0; c < n; ++c) Merge(b, v[c], i + c);
  });
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kAllLanes, b.value, o);
    const int oi = __shfl_xor_sync(kAllLanes, b.index, o);
    Merge(b, ov, oi);
  }
  if (threadIdx.x % 32 == 0) s.wf[threadIdx.x / 32] = b.value, s.wi[threadIdx.x / 32] = b.index;
  __syncthreads();
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) Merge(b, s.wf[w], s.wi[w]);
  __syncthreads();
  if (b.index == INT32_MAX) b.index = 0;  // all NaN: the CPU answers 0
  return b;
}

// Index of the n-th (1-based, n ≥ 1) element in index order whose key is `key` and index ≤ `limit`.
// The caller knows there are at least n.
__device__ int NthTie(const Row& row, uint32_t key, int limit, int n, Scratch& s) {
  int mine = 0;
  ForEachGroup(row, [&](int i, const float(&v)[kGroup], int cnt) {
    for (int c = 0; c < cnt; ++c) mine += Key(v[c]) == key && i + c <= limit;
  });
  for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(kAllLanes, mine, o);
  if (threadIdx.x % 32 == 0) s.wi[threadIdx.x / 32] = mine;
  if (threadIdx.x == 0) s.result = limit;  // not reached for valid n
  __syncthreads();
  int before = 0, owner = -1;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32) && owner < 0; ++w) {
    if (before + s.wi[w] >= n) owner = w;
    else before += s.wi[w];
  }
  if (static_cast<int>(threadIdx.x / 32) == owner) {
    const int lane = threadIdx.x % 32;
    int need = n - before;  // warp-uniform
    ForEachGroup(row, [&](int i, const float(&v)[kGroup], int cnt) {
      if (need <= 0) return;
      int here = 0;
      for (int c = 0; c < cnt; ++c) here += Key(v[c]) == key && i + c <= limit;
      int incl = here;
      for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(kAllLanes, incl, o);
        if (lane >= o) incl += u;
      }
      if (incl >= need && incl - here < need) {
        int k = need - (incl - here);
        for (int c = 0; c < cnt; ++c)
          if (Key(v[c]) == key && i + c <= limit && --k == 0) s.result = i + c;
      }
      need -= __shfl_sync(kAllLanes, incl, 31);
    });
  }
  __syncthreads();
  const int result = s.result;
  __syncthreads();
  return result;
}

// The cut that keeps the k largest (1 ≤ k < vocab) in the CPU's order: a radix select of the k-th
// key, most significant byte first, then the tie rule if the k-th key is shared past the cut.
__device__ Cut SelectTop(const Row& row, int k, SampleShared& sh) {
  const int lane = threadIdx.x % 32;
  uint32_t prefix = 0, mask = 0;
  int remaining = k, equal = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.hist[b] = 0;
    __syncthreads();
    ForEachGroup(row, [&](int, const float(&v)[kGroup], int n) {
#pragma unroll
      for (int c = 0; c < kGroup; ++c) {
        const uint32_t key = Key(v[c]);
        const int digit = c < n && (key & mask) == prefix ? static_cast<int>((key >> shift) & 255u) : -1;
        // One shared atomic per distinct digit per warp: logits crowd into a few top-byte bins.
        const unsigned peers = __match_any_sync(kAllLanes, digit);
        if (digit >= 0 && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[digit], __popc(peers));
      }
    });
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l holds bins 255-8l .. 248-8l, highest first; find the bin where the count from the
      // top reaches `remaining`.
      int h[8];
      int sum = 0;
      for (int q = 0; q < 8; ++q) sum += h[q] = static_cast<int>(sh.hist[255 - 8 * lane - q]);
      int incl = sum;
      for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(kAllLanes, incl, o);
        if (lane >= o) incl += u;
      }
      int acc = incl - sum;
      if (acc < remaining && incl >= remaining) {
        for (int q = 0; q < 8; ++q) {
          if (acc + h[q] >= remaining) {
            sh.s.bin = 255 - 8 * lane - q, sh.s.above = acc, sh.s.equal = h[q];
            break;
          }
          acc += h[q];
        }
      }
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh.s.bin) << shift;
    mask |= 255u << shift;
    remaining -= sh.s.above;
    equal = sh.s.equal;
    // sh.s.bin/above/equal are next written after two more barriers, when every thread has read them.
  }
  Cut cut{prefix, INT32_MAX};
  // prefix 0: fewer than k logits are not NaN, and the cut keeps all of those without a tie rule.
  if (equal > remaining && prefix != 0u) cut.last = NthTie(row, prefix, INT32_MAX, remaining, sh.s);
  return cut;
}

// Probability weight of a logit relative to the row's maximum, as the CPU's exp(l/T − max/T). A NaN
// weighs 0 (the CPU's -inf), should one reach a sum despite Kept().
struct Softmax {
  float temperature;
  float scaled_max;
  __device__ float operator()(float l) const { return isnan(l) ? 0.0f : expf(l / temperature - scaled_max); }
};

// Copies the cut's tokens (≤ kCap of them) to shared memory sorted in the CPU's order.
__device__ int CompactSorted(const Row& row, const Cut& cut, SampleShared& sh) {
  const int lane = threadIdx.x % 32;
  if (threadIdx.x == 0) sh.s.count = 0;
  __syncthreads();
  ForEachGroup(row, [&](int i, const float(&v)[kGroup], int n) {
#pragma unroll
    for (int c = 0; c < kGroup; ++c) {
      const uint32_t key = Key(v[c]);
      const bool keep = c < n && Kept(cut, key, i + c);
      const unsigned ballot = __ballot_sync(kAllLanes, keep);
      int base = 0;
      if (lane == 0 && ballot != 0) base = atomicAdd(&sh.s.count, __popc(ballot));
      base = __shfl_sync(kAllLanes, base, 0);
      const int pos = base + __popc(ballot & LaneMaskLt());
      if (keep && pos < kCap)
        sh.sorted[pos] = static_cast<unsigned long long>(key) << 32 | static_cast<uint32_t>(~(i + c));
    }
  });
  __syncthreads();
  const int count = min(sh.s.count, kCap);
  int padded = 1;
  while (padded < count) padded <<= 1;
  // Real entries have a nonzero low word, so 0 sorts after all of them.
  for (int i = count + threadIdx.x; i < padded; i += blockDim.x) sh.sorted[i] = 0;
  __syncthreads();
  // Bitonic sort, descending.
  for (int size = 2; size <= padded; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < padded; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const unsigned long long a = sh.sorted[i], b = sh.sorted[j];
          if ((i & size) == 0 ? a < b : a > b) sh.sorted[i] = b, sh.sorted[j] = a;
        }
      }
      __syncthreads();
    }
  }
  return count;
}

// Draws from the `count` sorted tokens. With top_p < 1 only the shortest prefix whose mass reaches
// top_p of `denom` is kept (denom ≤ 0: the tokens' own total). Run by warp 0 alone.
//
// The cut repeats the CPU's arithmetic: probabilities exp(double(l/T) − double(max/T)) in double, and
// Σ p/denom added one token at a time in sorted order until it reaches top_p. The order of those
// additions decides the cut when probabilities tie exactly (equal logits: a sum of 0.1s ten times is
// below 1), so lane 0 does them sequentially; the nucleus is usually short and the loop stops there.
__device__ int DrawSorted(int count, float top_p, double denom, const Softmax& prob, SampleShared& sh) {
  const int lane = threadIdx.x % 32;
  const int lo = lane * kCapPerLane, hi = min(count, lo + kCapPerLane);
  double* q = sh.cum;  // first p/denom per token, then its running sum for the draw
  double local = 0.0;
  for (int r = lo; r < hi; ++r) {
    // Never NaN: CompactSorted copies kept tokens only, and Kept() rejects NaN keys.
    const float scaled = KeyValue(static_cast<uint32_t>(sh.sorted[r] >> 32)) / prob.temperature;
    q[r] = exp(static_cast<double>(scaled) - static_cast<double>(prob.scaled_max));
    local += q[r];
  }
  double total = local;
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(kAllLanes, total, o);
  const double z = denom > 0.0 ? denom : total;
  for (int r = lo; r < hi; ++r) q[r] /= z;
  __syncwarp();
  int keep = count;
  if (top_p < 1.0f) {
    if (lane == 0) {
      double cum = 0.0;
      int n = 0;
      while (n < count) {
        cum += q[n++];
        if (cum >= top_p) break;
      }
      keep = n;
    }
    keep = __shfl_sync(kAllLanes, keep, 0);
  }
  // Running sums over the kept prefix for the inverse-CDF draw (any fixed summation will do here).
  const int end = min(hi, keep);
  local = 0.0;
  for (int r = lo; r < end; ++r) q[r] = local += q[r];
  double incl = local;
  for (int o = 1; o < 32; o <<= 1) {
    const double u = __shfl_up_sync(kAllLanes, incl, o);
    if (lane >= o) incl += u;
  }
  for (int r = lo; r < end; ++r) q[r] += incl - local;
  __syncwarp();
  const double x = (1.0 - sh.s.u) * q[keep - 1];
  // The first kept r with q[r] > x; the scan need not be monotone to the last ulp across lanes, so
  // take the minimum over the warp rather than assume a single crossing.
  int first = INT32_MAX;
  for (int r = lo; r < end; ++r)
    if (q[r] > x) {
      first = r;
      break;
    }
  for (int o = 16; o > 0; o >>= 1) first = min(first, __shfl_xor_sync(kAllLanes, first, o));
  if (first == INT32_MAX) first = keep - 1;
  return static_cast<int>(~static_cast<uint32_t>(sh.sorted[first]));
}

// Inverse-CDF draw over everything both cuts keep, in index order, without materialising it.
// `fallback` (the row's argmax) is the answer should no warp own the point drawn, which only a bug
// could cause: the row maximum is always kept, with mass 1, and NaNs never are.
__device__ int DrawInOrder(const Row& row, const Cut& a, const Cut& b, const Softmax& prob, int fallback, Scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Callers' last read of s.result is behind a barrier, and the barrier below orders this write
  // before the owner warp's.
  if (threadIdx.x == 0) s.result = -1;
  double mine = 0.0;
  ForEachGroup(row, [&](int i, const float(&v)[kGroup], int n) {
    for (int c = 0; c < n; ++c) {
      const uint32_t key = Key(v[c]);
      if (Kept(a, key, i + c) && Kept(b, key, i + c)) mine += prob(v[c]);
    }
  });
  for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(kAllLanes, mine, o);
  if (lane == 0) s.wd[warp] = mine;
  __syncthreads();
  double z = 0.0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) z += s.wd[w];
  const double x = (1.0 - s.u) * z;
  // The owner is the last warp with mass whose range starts at or below x (the row maximum is kept,
  // so there is one); its walk below ends on a kept token even if rounding keeps x out of reach.
  double before = 0.0, owner_before = 0.0;
  int owner = -1;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (s.wd[w] > 0.0 && before <= x) owner = w, owner_before = before;
    before += s.wd[w];
  }
  if (warp == owner) {
    double rest = x - owner_before;  // warp-uniform
    int found = -1, last_kept = -1;  // last_kept: the last token with mass walked past
    ForEachGroup(row, [&](int i, const float(&v)[kGroup], int n) {
      float p[kGroup];
      double here = 0.0;
      int lane_last = -1;
      for (int c = 0; c < kGroup; ++c) {
        const uint32_t key = Key(v[c]);
        const bool keep = c < n && Kept(a, key, i + c) && Kept(b, key, i + c);
        p[c] = keep ? prob(v[c]) : 0.0f;
        if (p[c] > 0.0f) lane_last = i + c;
        here += p[c];
      }
      for (int o = 16; o > 0; o >>= 1) lane_last = max(lane_last, __shfl_xor_sync(kAllLanes, lane_last, o));
      if (found >= 0) return;
      double incl = here;
      for (int o = 1; o < 32; o <<= 1) {
        const double u = __shfl_up_sync(kAllLanes, incl, o);
        if (lane >= o) incl += u;
      }
      const unsigned hit = __ballot_sync(kAllLanes, here > 0.0 && incl > rest);
      if (hit != 0) {
        const int src = __ffs(hit) - 1;
        int pick = -1;
        if (lane == src) {
          double acc = incl - here;
          for (int c = 0; c < kGroup && pick < 0; ++c) {
            if (p[c] <= 0.0f) continue;
            acc += p[c];
            if (acc > rest) pick = i + c;
          }
          if (pick < 0) {
            for (int c = 0; c < kGroup; ++c)
              if (p[c] > 0.0f) pick = i + c;
          }
        }
        found = __shfl_sync(kAllLanes, pick, src);
      } else {
        rest -= __shfl_sync(kAllLanes, incl, 31);
        if (lane_last >= 0) last_kept = lane_last;
      }
    });
    if (lane == 0) s.result = found >= 0 ? found : last_kept;
  }
  __syncthreads();
  const int result = s.result;
  __syncthreads();
  return result >= 0 ? result : fallback;
}

// Mass of the kept tokens whose key is ≥ lo (and, with strict, > lo; `ties` counts those equal).
__device__ double MassFrom(const Row& row, const Cut& kept, uint32_t lo, bool strict, const Softmax& prob,
                           int* ties, Scratch& s) {
  double mass = 0.0;
  int equal = 0;
  ForEachGroup(row, [&](int i, const float(&v)[kGroup], int n) {
    for (int c = 0; c < n; ++c) {
      const uint32_t key = Key(v[c]);
      if (!Kept(kept, key, i + c)) continue;
      if (key > lo || (!strict && key == lo)) mass += prob(v[c]);
      equal += key == lo;
    }
  });
  if (ties != nullptr) *ties = BlockSum(equal, s);
  return BlockSum(mass, s);
}

// The top-p cut over a large kept set: the largest key τ whose kept mass at or above it reaches
// `target`, by bisection over [lo, hi], then as many ties at τ, lowest index first, as the CPU's
// one-token-at-a-time loop would take.
__device__ Cut BisectTopP(const Row& row, const Cut& kept, uint32_t lo, uint32_t hi, double target,
                          const Softmax& prob, Scratch& s) {
  while (lo < hi) {
    const uint32_t mid = lo + static_cast<uint32_t>((static_cast<uint64_t>(hi) - lo + 1) / 2);
    if (MassFrom(row, kept, mid, false, prob, nullptr, s) >= target) lo = mid;
    else hi = mid - 1;
  }
  int ties = 0;
  const double above = MassFrom(row, kept, lo, true, prob, &ties, s);
  const double each = prob(KeyValue(lo));
  double want = each > 0.0 ? ceil((target - above) / each) : ties;
  want = fmin(fmax(want, 1.0), static_cast<double>(ties));
  Cut cut{lo, INT32_MAX};
  if (static_cast<int>(want) < ties)
    cut.last = NthTie(row, lo, lo == kept.key ? kept.last : INT32_MAX, static_cast<int>(want), s);
  return cut;
}

__device__ int SampleRow(const Row& row, const SamplingRow& p, const Best& best, SampleShared& sh) {
  const Softmax prob{p.temperature, best.value / p.temperature};
  // A +inf maximum, or one that overflows at this temperature (the greedy limit), or a row without
  // a finite logit (best.value -inf: all -inf or NaN, best.index 0).
  if (!isfinite(prob.scaled_max)) return best.index;
  if (threadIdx.x == 0) {
    curandStatePhilox4_32_10_t state;
    curand_init(p.seed, 0, p.offset, &state);
    sh.s.u = curand_uniform_double(&state);  // (0, 1]; every use below is after a barrier
  }
  Cut top_k = KeepAll();
  int kept = row.vocab;
  if (p.top_k > 0 && p.top_k < row.vocab) top_k = SelectTop(row, p.top_k, sh), kept = p.top_k;
  const bool use_p = p.top_p < 1.0f;

  if (kept <= kCap) {
    const int count = CompactSorted(row, top_k, sh);
    if (threadIdx.x < 32) {
      const int token = DrawSorted(count, p.top_p, 0.0, prob, sh);
      if (threadIdx.x == 0) sh.s.result = token;
    }
    __syncthreads();
    const int token = sh.s.result;
    __syncthreads();
    return token;
  }
  if (!use_p) return DrawInOrder(row, top_k, KeepAll(), prob, best.index, sh.s);

  // Usually the nucleus lies within the kCap most likely tokens: check, then cut those exactly.
  const Cut head = SelectTop(row, kCap, sh);
  double kept_mass = 0.0, head_mass = 0.0;
  {
    double a = 0.0, b = 0.0;
    ForEachGroup(row, [&](int i, const float(&v)[kGroup], int n) {
      for (int c = 0; c < n; ++c) {
        const uint32_t key = Key(v[c]);
        if (!Kept(top_k, key, i + c)) continue;
        const float q = prob(v[c]);
        a += q;
        if (Kept(head, key, i + c)) b += q;
      }
    });
    kept_mass = BlockSum(a, sh.s);
    head_mass = BlockSum(b, sh.s);
  }
  const double target = static_cast<double>(p.top_p) * kept_mass;
  if (head_mass >= target) {
    const int count = CompactSorted(row, head, sh);
    if (threadIdx.x < 32) {
      const int token = DrawSorted(count, p.top_p, kept_mass, prob, sh);
      if (threadIdx.x == 0) sh.s.result = token;
    }
    __syncthreads();
    const int token = sh.s.result;
    __syncthreads();
    return token;
  }
  // head ⊂ top_k, and the mass above head's key is below target, so τ lies in [top_k.key, head.key].
  const Cut top_p = BisectTopP(row, top_k, top_k.key, head.key, target, prob, sh.s);
  return DrawInOrder(row, top_k, top_p, prob, best.index, sh.s);
}

__global__ void __launch_bounds__(kSampleThreads)
    SampleRowsKernel(const float* __restrict__ logits, int64_t m, int vocab, const SamplingRow* __restrict__ rows,
                     int32_t* __restrict__ out) {
  __shared__ SampleShared sh;
  const bool vec = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  for (int64_t r = blockIdx.x; r < m; r += gridDim.x) {
    const SamplingRow p = rows[r];
    const Row row = MakeRow(logits + r * vocab, vocab, vec);
    const Best best = RowArgMax(row, sh.s);
    // Negated so that a NaN temperature is greedy too.
    const int token = !(p.temperature >= kGreedyBelowTemperature) ? best.index : SampleRow(row, p, best, sh);
    if (threadIdx.x == 0) out[r] = token;
  }
}

__global__ void __launch_bounds__(kArgMaxThreads)
    ArgMaxKernel(const float* __restrict__ logits, int64_t m, int vocab, int32_t* __restrict__ out) {
  __shared__ Scratch s;
  const bool vec = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  for (int64_t r = blockIdx.x; r < m; r += gridDim.x) {
    const Best best = RowArgMax(MakeRow(logits + r * vocab, vocab, vec), s);
    if (threadIdx.x == 0) out[r] = best.index;
  }
}

Status CheckShape(const char* op, int64_t m, int vocab) {
  if (m < 0 || vocab <= 0 || vocab > kMaxVocab)
    return InvalidArgument(std::string(op) + ": bad shape (m " + std::to_string(m) + ", vocab " +
                           std::to_string(vocab) + ")");
  return Status::Ok();
}

}  // namespace

Status ArgMax(const float* logits, int64_t m, int vocab, int32_t* out, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(CheckShape("ArgMax", m, vocab));
  if (m == 0) return Status::Ok();
  ArgMaxKernel<<<static_cast<unsigned>(m < kMaxBlocks ? m : kMaxBlocks), kArgMaxThreads, 0, stream>>>(logits, m,
                                                                                                     vocab, out);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("ArgMaxKernel");
  return Status::Ok();
}

Status SampleRows(float* logits, int64_t m, int vocab, const SamplingRow* rows, int32_t* out, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(CheckShape("SampleRows", m, vocab));
  if (m == 0) return Status::Ok();
  SampleRowsKernel<<<static_cast<unsigned>(m < kMaxBlocks ? m : kMaxBlocks), kSampleThreads, 0, stream>>>(
      logits, m, vocab, rows, out);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("SampleRowsKernel");
  return Status::Ok();
}

}  // namespace shoal::cuda
