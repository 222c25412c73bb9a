// A point in time by which a blocking operation must finish. Every collective in comm/ takes one, so
// a stalled or dead peer turns into a DeadlineExceeded status on the others instead of a hang.
#pragma once

#include <chrono>
#include <cstdint>

namespace shoal {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  static Deadline After(std::chrono::milliseconds d) { return Deadline(Clock::now() + d); }
  static Deadline AfterMs(int64_t ms) { return After(std::chrono::milliseconds(ms)); }
  // For call sites that genuinely cannot time out (tests of the happy path, single-process runs).
  static Deadline Never() { return Deadline(Clock::time_point::max()); }

  Clock::time_point when() const { return when_; }
  bool Expired() const { return Clock::now() >= when_; }
  bool Expired(Clock::time_point now) const { return now >= when_; }

 private:
  explicit Deadline(Clock::time_point when) : when_(when) {}
  Clock::time_point when_;
};

}  // namespace shoal
