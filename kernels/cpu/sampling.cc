// Token sampling: temperature, then min-p (drop tokens below min_p × the top probability), top-k, top-p (nucleus: the smallest set of most likely tokens
// whose probability reaches p), then a draw from the caller's seeded generator. Greedy when the
// temperature is below kGreedyBelowTemperature, and whenever the scaled logits overflow.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/kernels.h"

namespace shoal::kernels {

int32_t SampleToken(float* logits, int vocab, const SamplingParams& params, std::mt19937_64& rng) {
  // Negated so that a NaN temperature is greedy too.
  if (!(params.temperature >= kGreedyBelowTemperature)) return ArgMax(logits, vocab);
  // A NaN would get NaN mass and break the sort's strict weak ordering; -inf gets none.
  for (int i = 0; i < vocab; ++i)
    if (std::isnan(logits[i])) logits[i] = -INFINITY;
  std::vector<int32_t> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; };
  int keep = vocab;
  if (params.top_k > 0 && params.top_k < vocab) {
    keep = params.top_k;
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
  } else {
    std::sort(idx.begin(), idx.end(), by_logit);
  }
  // Softmax over the kept tokens at this temperature (sorted descending, so idx[0] is the max).
  std::vector<double> p(keep);
  const double mx = logits[idx[0]] / params.temperature;
  // A +inf maximum (or one that overflows at this temperature) makes exp(inf − inf) NaN, and an all
  // -inf row has no mass: no draw could land. The limit of the softmax is the argmax, which idx[0]
  // is (ties → lowest index, as ArgMax; an all-NaN row, now all -inf, gives 0).
  if (!std::isfinite(mx)) return idx[0];
  double sum = 0.0;
  for (int i = 0; i < keep; ++i) sum += p[i] = std::exp(logits[idx[i]] / params.temperature - mx);
  if (params.min_p > 0.0f) {
    // p[0] = 1 is the most likely token's (unnormalised) probability; the kept ones are a prefix.
    int n = 1;
    while (n < keep && p[n] >= params.min_p) ++n;
    keep = n;
    sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  if (params.top_p < 1.0f) {
    double cum = 0.0;
    int n = 0;
    while (n < keep) {
      cum += p[n] / sum;
      ++n;
      if (cum >= params.top_p) break;
    }
    keep = n;
    sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  const double r = std::uniform_real_distribution<double>(0.0, sum)(rng);
  double c = 0.0;
  for (int i = 0; i < keep; ++i) {
    c += p[i];
    if (r < c) return idx[i];
  }
  // Only rounding gets here (a draw of `sum` itself): the last kept token with mass, never one with
  // none (a -inf, formerly NaN, logit).
  for (int i = keep - 1; i > 0; --i)
    if (p[i] > 0.0) return idx[i];
  return idx[0];
}

LogSoftmax::LogSoftmax(const float* logits, int vocab, float temperature) : logits_(logits) {
  if (temperature >= kGreedyBelowTemperature) inv_t_ = 1.0f / temperature;
  float mx = -INFINITY;
  for (int i = 0; i < vocab; ++i) mx = std::isnan(logits[i]) ? mx : std::max(mx, logits[i] * inv_t_);
  if (!std::isfinite(mx)) {
    // The order of the raw logits is the order at any positive temperature, overflow aside. With no
    // finite logit, SampleToken's sort (NaN as -inf, ties to the lowest index) gives 0, where greedy's
    // ArgMax gives the first non-NaN.
    const bool greedy = !(temperature >= kGreedyBelowTemperature);
    only_token_ = greedy || mx > -INFINITY ? ArgMax(logits, vocab) : 0;
    return;
  }
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) {
    if (!std::isnan(logits[i])) sum += std::exp(static_cast<double>(logits[i] * inv_t_ - mx));
  }
  log_z_ = static_cast<double>(mx) + std::log(sum);  // sum >= 1: the maximum's own term
}

float LogSoftmax::At(int32_t token) const {
  if (only_token_ >= 0) return token == only_token_ ? 0.0f : -INFINITY;
  const float l = logits_[token];
  if (std::isnan(l)) return -INFINITY;
  return std::min(0.0f, static_cast<float>(static_cast<double>(l * inv_t_) - log_z_));
}

}  // namespace shoal::kernels
