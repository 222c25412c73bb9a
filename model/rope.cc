#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace shoal {

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const RopeConfig& r = c.rope;
  const int dim = c.head_dim;
  const int half = dim / 2;
  std::vector<float> inv(half);
  // transformers: base ** (arange(0, dim, 2).float() / dim), evaluated in f32.
  std::vector<float> pos_freq(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    pos_freq[i] = static_cast<float>(std::pow(r.theta, static_cast<double>(exponent)));
  }
  switch (r.type) {
    case RopeConfig::Type::kDefault:
      for (int i = 0; i < half; ++i) inv[i] = 1.0f / pos_freq[i];
      break;
    case RopeConfig::Type::kLinear:
      for (int i = 0; i < half; ++i) inv[i] = (1.0f / pos_freq[i]) / static_cast<float>(r.factor);
      break;
    case RopeConfig::Type::kYarn: {
      const double orig = r.original_max_position_embeddings;
      auto correction_dim = [&](double rotations) {
        return (dim * std::log(orig / (rotations * 2 * M_PI))) / (2 * std::log(r.theta));
      };
      double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
      if (r.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;
      for (int i = 0; i < half; ++i) {
        const float ramp = std::clamp(static_cast<float>((i - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolation_factor = 1.0f - ramp;
        const float extrapolation = 1.0f / pos_freq[i];
        const float interpolation = 1.0f / (static_cast<float>(r.factor) * pos_freq[i]);
        inv[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
      }
      break;
    }
    case RopeConfig::Type::kLlama3: {
      const double old_len = r.original_max_position_embeddings;
      const double low_wavelen = old_len / r.low_freq_factor;
      const double high_wavelen = old_len / r.high_freq_factor;
      for (int i = 0; i < half; ++i) {
        const float f = 1.0f / pos_freq[i];
        const double wavelen = 2 * M_PI / f;
        float scaled = wavelen > low_wavelen ? f / static_cast<float>(r.factor) : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
          const float smooth = static_cast<float>((old_len / wavelen - r.low_freq_factor) /
                                                  (r.high_freq_factor - r.low_freq_factor));
          scaled = (1.0f - smooth) * scaled / static_cast<float>(r.factor) + smooth * scaled;
        }
        inv[i] = scaled;
      }
      break;
    }
  }
  return inv;
}

}  // namespace shoal
