// common/log.h: the line format (UTC time, level, tag), the level threshold, one line per call.
#include "common/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <regex>
#include <string>

namespace shoal::log {
namespace {

// Runs `fn` with stderr sent to a temporary file; returns what was written.
template <class Fn>
std::string CaptureStderr(Fn fn) {
  FILE* tmp = std::tmpfile();
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(::fileno(tmp), STDERR_FILENO);
  fn();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string out;
  std::rewind(tmp);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, tmp)) > 0;) out.append(buf, n);
  std::fclose(tmp);
  return out;
}

TEST(Log, LinesCarryTimeLevelAndTag) {
  SetTag("worker g0 rank 1/2");
  SetLevel(Level::kInfo);
  const std::string out = CaptureStderr([] { Warn("step %d took %.1f s\n", 7, 2.5); });
  const std::regex line(R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARN  \[worker g0 rank 1/2\] step 7 took 2\.5 s\n$)");
  EXPECT_TRUE(std::regex_match(out, line)) << out;
}

TEST(Log, LevelsBelowTheThresholdAreDropped) {
  SetTag("serve");
  SetLevel(Level::kWarn);
  const std::string out = CaptureStderr([] {
    Debug("d");
    Info("i");
    Warn("w");
    Error("e");
  });
  EXPECT_EQ(out.find("] d\n"), std::string::npos);
  EXPECT_EQ(out.find("] i\n"), std::string::npos);
  EXPECT_NE(out.find(" WARN  [serve] w\n"), std::string::npos) << out;
  EXPECT_NE(out.find(" ERROR [serve] e\n"), std::string::npos) << out;
  SetLevel(Level::kInfo);
}

TEST(Log, LongMessagesAreWrittenWhole) {
  SetLevel(Level::kInfo);
  const std::string big(5000, 'x');
  const std::string out = CaptureStderr([&] { Info("%s|end", big.c_str()); });
  EXPECT_NE(out.find(big + "|end\n"), std::string::npos);
}

}  // namespace
}  // namespace shoal::log
