// Element types of weights and activations, and the scalar conversions between them.
//
// Weights stay in the dtype of the checkpoint (bf16, f16, f32, or FP8 e4m3 with block scales) and are
// widened to f32 inside the kernels; activations are f32. These scalar helpers are the reference the vectorised kernels are
// tested against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace shoal {

enum class DType : uint8_t { kF32, kF16, kBF16, kF8E4M3 };

constexpr size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : t == DType::kF8E4M3 ? 1 : 2; }
const char* DTypeName(DType t);  // "F32", "F16", "BF16", "F8_E4M3" (the safetensors spelling)

// FP8 e4m3 (the "fn" variant torch and DeepSeek use: no infinities, 0x7f/0xff are NaN) → f32.
float F8E4M3ToF32(uint8_t v);

inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, as torch does when casting f32 → bf16. NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

}  // namespace shoal
