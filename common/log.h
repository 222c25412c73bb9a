// Log lines on stderr: "2026-12-04 17:20:00.123 INFO  [worker g0 rank 1/2] message" — UTC time to the
// millisecond, the level, the process's tag (the subcommand, and on a worker its group and rank) and
// the message. A line is assembled first and written with one write(2), so lines from several
// threads (the coordinator's HTTP and control threads) never interleave.
//
// SHOAL_LOG_LEVEL=debug|info|warn|error (default info) hides the levels below it.
// Thread-safe.
#pragma once

#include <string>

namespace shoal::log {

enum class Level : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// The process's tag: "serve", "up", "worker", "worker g0 rank 1/2". Set by the subcommand, and again
// by a worker once it knows its group and rank.
void SetTag(std::string tag);
// Overrides SHOAL_LOG_LEVEL (tests, `--quiet` style options).
void SetLevel(Level level);
bool Enabled(Level level);

void Debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The line Info() and friends write (without the trailing newline), for tests.
std::string FormatLine(Level level, const std::string& message);

}  // namespace shoal::log
