#include "common/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

namespace shoal::log {
namespace {

std::mutex g_tag_mu;
std::string& Tag() {
  static std::string tag = "shoal";
  return tag;
}

Level LevelFromEnvironment() {
  const char* v = std::getenv("SHOAL_LOG_LEVEL");
  if (v == nullptr) return Level::kInfo;
  if (std::strcmp(v, "debug") == 0) return Level::kDebug;
  if (std::strcmp(v, "warn") == 0 || std::strcmp(v, "warning") == 0) return Level::kWarn;
  if (std::strcmp(v, "error") == 0) return Level::kError;
  return Level::kInfo;
}

std::atomic<int>& Threshold() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnvironment())};
  return level;
}

const char* Name(Level level) {
  switch (level) {
    case Level::kDebug: return "DEBUG";
    case Level::kInfo: return "INFO ";
    case Level::kWarn: return "WARN ";
    case Level::kError: return "ERROR";
  }
  return "?";
}

void Write(Level level, const char* fmt, va_list args) {
  if (!Enabled(level)) return;
  char stack[1024];
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(stack, sizeof stack, fmt, copy);
  va_end(copy);
  std::string message;
  if (n >= 0 && static_cast<size_t>(n) < sizeof stack) {
    message.assign(stack, static_cast<size_t>(n));
  } else if (n >= 0) {
    message.resize(static_cast<size_t>(n) + 1);
    std::vsnprintf(message.data(), message.size(), fmt, args);
    message.resize(static_cast<size_t>(n));
  }
  while (!message.empty() && message.back() == '\n') message.pop_back();
  std::string line = FormatLine(level, message);
  line += '\n';
  for (size_t off = 0; off < line.size();) {
    const ssize_t w = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
}

}  // namespace

void SetTag(std::string tag) {
  std::lock_guard<std::mutex> lock(g_tag_mu);
  Tag() = std::move(tag);
}

void SetLevel(Level level) { Threshold().store(static_cast<int>(level)); }

bool Enabled(Level level) { return static_cast<int>(level) >= Threshold().load(std::memory_order_relaxed); }

std::string FormatLine(Level level, const std::string& message) {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm utc{};
  gmtime_r(&tv.tv_sec, &utc);
  char stamp[40];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02d %02d:%02d:%02d.%03d", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(tv.tv_usec / 1000));
  std::string tag;
  {
    std::lock_guard<std::mutex> lock(g_tag_mu);
    tag = Tag();
  }
  return std::string(stamp) + " " + Name(level) + " [" + tag + "] " + message;
}

#define SHOAL_LOG_DEFINE(fn, level)   \
  void fn(const char* fmt, ...) {     \
    va_list args;                     \
    va_start(args, fmt);              \
    Write(level, fmt, args);          \
    va_end(args);                     \
  }
SHOAL_LOG_DEFINE(Debug, Level::kDebug)
SHOAL_LOG_DEFINE(Info, Level::kInfo)
SHOAL_LOG_DEFINE(Warn, Level::kWarn)
SHOAL_LOG_DEFINE(Error, Level::kError)
#undef SHOAL_LOG_DEFINE

}  // namespace shoal::log
