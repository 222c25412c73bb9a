// Token sampling: temperature, then top-k, then top-p (nucleus: the smallest set of most likely tokens
// whose probability reaches p), then a draw from the caller's seeded generator. Greedy when
// temperature is 0.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/kernels.h"

namespace shoal::kernels {

int32_t SampleToken(float* logits, int vocab, const SamplingParams& params, std::mt19937_64& rng) {
  if (params.temperature <= 0.0f) return ArgMax(logits, vocab);
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
  double sum = 0.0;
  for (int i = 0; i < keep; ++i) sum += p[i] = std::exp(logits[idx[i]] / params.temperature - mx);
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
  return idx[keep - 1];
}

}  // namespace shoal::kernels
