// Internal to kernels/cpu: the per-ISA matmul row kernels and the run-time choice between them.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"

namespace shoal::kernels::cpu {

// Computes y[i, n] for rows n in [n_begin, n_end) and every i < m. Row stride of y is w.rows.
using MatMulRowsFn = void (*)(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y);

void MatMulRowsGeneric(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y);
void MatMulRowsF8(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y);
#if defined(__x86_64__)
void MatMulRowsAvx2(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y);
void MatMulRowsF8Avx2(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y);
#endif

}  // namespace shoal::kernels::cpu
