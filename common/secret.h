// Comparing secrets (API keys, the control-plane join token) in time independent of where they
// differ, so response timing does not reveal how much of a guess was right.
#pragma once

#include <string_view>

namespace shoal {

inline bool SecretsEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace shoal
