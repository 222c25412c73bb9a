// AVX2 + FMA + F16C matmul rows; compiled with those flags and called only after a run-time check.
//
// Register blocking: NB weight rows × MB activation rows of 8-wide f32 accumulators (NB·MB ≤ 12). Each
// 8-element chunk of a weight row is widened once and used for MB activation rows, so at batch 1 the
// kernel streams weights at close to memory speed and at batch 16 it reads each weight byte from
// memory once (later activation-row blocks hit L1/L2).
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/matmul_impl.h"

namespace shoal::kernels::cpu {

namespace {

inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 Load8(const uint16_t* p, DType t) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (t == DType::kF16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline float HSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// Eight FP8 e4m3 weights → f32 through F16C, as e4m3 × 2^-8 (the 2^8 is folded into the activations
// with the block scales; the formats' subnormals line up, so no input needs a special case). The byte
// goes to the high half of a 16-bit lane, an arithmetic shift right by one puts the 7 exponent-and-
// mantissa bits at f16 bits 7..13 with the sign at 15 (and a copy at 14, cleared). e4m3's NaN
// (0x7f / 0xff) becomes a finite value: checkpoints hold none.
inline __m256 LoadF8(const uint8_t* p) {
  const __m128i hi = _mm_unpacklo_epi8(_mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_cvtph_ps(_mm_and_si128(_mm_srai_epi16(hi, 1), _mm_set1_epi16(static_cast<short>(0xbfff))));
}

template <class T>
inline float LoadScalar(const T* p, int64_t i, DType t) {
  if constexpr (sizeof(T) == 4) {
    return p[i];
  } else if constexpr (sizeof(T) == 1) {
    (void)t;
    return F8E4M3ToF32(p[i]) * (1.0f / 256.0f);
  } else {
    return t == DType::kF16 ? F16ToF32(p[i]) : Bf16ToF32(p[i]);
  }
}

template <class T>
inline __m256 LoadW(const T* p, DType t) {
  if constexpr (sizeof(T) == 4) {
    (void)t;
    return Load8(p);
  } else if constexpr (sizeof(T) == 1) {
    (void)t;
    return LoadF8(p);
  } else {
    return Load8(p, t);
  }
}

// Software prefetch distance (elements) for a weight type; 0 leaves it to the hardware. FP8 rows are
// consumed at half the bytes per FMA of bf16, and the hardware prefetcher alone left the FP8 kernel at
// ~0.5 of bf16's bytes/s out of cache (decode_bench); prefetching 512 bytes ahead in each of the NB rows
// brought it to ~0.57 (2 threads, this VM). 16-bit weights: 512 bytes ahead too, measured with 8-row
// blocks at batch 1 — batch-1 decode +9 % (decode_bench) to +20 % (the bench model); 1 KiB ahead was
// slower, 256 bytes a little (docs/benchmarks.md). f32 weights are left to the hardware.
template <class T>
constexpr int kPrefetch = 0;
template <>
constexpr int kPrefetch<uint8_t> = 512;
template <>
constexpr int kPrefetch<uint16_t> = 256;

// y[i, n0 + r] for r < NB, i in [i0, i0 + MB).
template <int NB, int MB, class T>
inline void Block(const float* x, int64_t k, const T* w, DType t, int64_t n0, int64_t i0, int64_t ldy, float* y) {
  __m256 acc[NB][MB];
  for (int r = 0; r < NB; ++r)
    for (int c = 0; c < MB; ++c) acc[r][c] = _mm256_setzero_ps();
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t j = 0; j < k8; j += 8) {
    __m256 wv[NB];
    if constexpr (kPrefetch<T> > 0) {
      if ((j * sizeof(T) & 63) == 0)
        for (int r = 0; r < NB; ++r) _mm_prefetch(reinterpret_cast<const char*>(w + (n0 + r) * k + j + kPrefetch<T>), _MM_HINT_T0);
    }
    for (int r = 0; r < NB; ++r) wv[r] = LoadW(w + (n0 + r) * k + j, t);
    for (int c = 0; c < MB; ++c) {
      const __m256 xv = Load8(x + (i0 + c) * k + j);
      for (int r = 0; r < NB; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < NB; ++r) {
    for (int c = 0; c < MB; ++c) {
      float s = HSum(acc[r][c]);
      for (int64_t j = k8; j < k; ++j) s += LoadScalar(w, (n0 + r) * k + j, t) * x[(i0 + c) * k + j];
      y[(i0 + c) * ldy + n0 + r] = s;
    }
  }
}

// Rows i in [i0, i0 + rem) for rem < 8: one block sized exactly, so every weight chunk is widened once.
template <int NB, class T>
inline void Tail(const float* x, int64_t k, const T* w, DType t, int64_t n0, int64_t i0, int rem, int64_t ldy,
                 float* y) {
  switch (rem) {
    case 1: Block<NB, 1>(x, k, w, t, n0, i0, ldy, y); break;
    case 2: Block<NB, 2>(x, k, w, t, n0, i0, ldy, y); break;
    case 3: Block<NB, 3>(x, k, w, t, n0, i0, ldy, y); break;
    case 4: Block<NB, 4>(x, k, w, t, n0, i0, ldy, y); break;
    case 5: Block<NB, 5>(x, k, w, t, n0, i0, ldy, y); break;
    case 6: Block<NB, 6>(x, k, w, t, n0, i0, ldy, y); break;
    case 7: Block<NB, 7>(x, k, w, t, n0, i0, ldy, y); break;
    default: break;
  }
}

// All m rows for weight rows [n0, n0 + NB): blocks of MB activation rows, then an exact-size tail.
template <int NB, int MB, class T>
inline void Rows(const float* x, int64_t m, int64_t k, const T* w, DType t, int64_t n0, int64_t ldy, float* y) {
  int64_t i = 0;
  for (; i + MB <= m; i += MB) Block<NB, MB>(x, k, w, t, n0, i, ldy, y);
  if (i < m) Tail<NB>(x, k, w, t, n0, i, static_cast<int>(m - i), ldy, y);
}

template <class T>
void RowsTyped(const float* x, int64_t m, const Matrix& wm, int64_t nb, int64_t ne, float* y) {
  const T* w = static_cast<const T*>(wm.data);
  const int64_t k = wm.cols;
  int64_t n = nb;
  // Up to 12 accumulators (of 16 ymm registers): with few activation rows (decode, or an expert that
  // got a handful of tokens) take more weight rows at once so FMA chains stay independent. At batch 1,
  // 8 weight rows at once: twice the streams in flight of 4 (+2 % on the bench model), each row still
  // summed in the same order, so the results are the same as 4's.
  if (m == 1) {
    for (; n + 8 <= ne; n += 8) Block<8, 1>(x, k, w, wm.dtype, n, 0, wm.rows, y);
    for (; n + 4 <= ne; n += 4) Block<4, 1>(x, k, w, wm.dtype, n, 0, wm.rows, y);
  } else if (m == 2) {
    for (; n + 4 <= ne; n += 4) Block<4, 2>(x, k, w, wm.dtype, n, 0, wm.rows, y);
  } else if (m == 3) {
    for (; n + 3 <= ne; n += 3) Block<3, 3>(x, k, w, wm.dtype, n, 0, wm.rows, y);
  } else if (m <= 5) {
    for (; n + 2 <= ne; n += 2) Rows<2, 5>(x, m, k, w, wm.dtype, n, wm.rows, y);
  } else {
    for (; n + 2 <= ne; n += 2) Rows<2, 6>(x, m, k, w, wm.dtype, n, wm.rows, y);
  }
  for (; n < ne; ++n) Rows<1, 8>(x, m, k, w, wm.dtype, n, wm.rows, y);
}

}  // namespace

// FP8 with block scales through the same register-blocked kernel as bf16: rows of one row block share
// their scales, so the scales (and LoadF8's 2^8) are folded into a copy of the activations once per
// (row block, column block) — x·(s·w) = (s·x)·w — and the inner loop is the plain widen-and-FMA one,
// several weight rows and activation rows at a time. Activations are scaled kRowsPerPass at a time so
// the copy stays in cache when a prefill brings many rows.
void MatMulRowsF8Avx2(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y) {
  constexpr int64_t kRowsPerPass = 32;
  const int64_t k = w.cols, bc = w.block_cols, br = w.block_rows;
  thread_local std::vector<float> scaled;
  scaled.resize(static_cast<size_t>(std::min(m, kRowsPerPass) * k));
  for (int64_t n = n_begin; n < n_end;) {
    const int64_t block_row = (w.scale_row0 + n) / br;
    const int64_t n1 = std::min(n_end, (block_row + 1) * br - w.scale_row0);
    const float* scale = w.block_scale + block_row * w.scale_cols;
    for (int64_t i0 = 0; i0 < m; i0 += kRowsPerPass) {
      const int64_t rows = std::min(kRowsPerPass, m - i0);
      for (int64_t i = 0; i < rows; ++i) {
        const float* xi = x + (i0 + i) * k;
        float* si = scaled.data() + i * k;
        for (int64_t b0 = 0; b0 < k; b0 += bc) {
          const float s = scale[b0 / bc] * 256.0f;
          const int64_t b1 = std::min(k, b0 + bc);
          for (int64_t j = b0; j < b1; ++j) si[j] = xi[j] * s;
        }
      }
      RowsTyped<uint8_t>(scaled.data(), rows, w, n, n1, y + i0 * w.rows);
    }
    n = n1;
  }
}

void MatMulRowsAvx2(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y) {
  if (w.dtype == DType::kF32) {
    RowsTyped<float>(x, m, w, n_begin, n_end, y);
  } else {
    RowsTyped<uint16_t>(x, m, w, n_begin, n_end, y);
  }
}

}  // namespace shoal::kernels::cpu
#endif
