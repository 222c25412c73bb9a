// The coordinator (`shoal serve`): an OpenAI-compatible HTTP server in front of one or more engine
// groups. It validates and tokenizes requests, applies chat templates, routes each request to the
// least-loaded worker of the healthiest ready group over the control plane (control/wire.h), and
// streams detokenized text back (SSE). Workers connect to it; it watches their heartbeats, and a
// worker that dies or stalls makes its group unready and ends the group's requests with an error.
//
// Threads: Run()'s caller becomes the control thread (ranks, routing, the request table, the
// watchdog); HTTP sessions run on server.http_threads threads and chat templates and tokenizing on
// server.text_threads (docs/architecture.md draws them). Stop() may be called from any thread or a
// signal-handling context that is not async-signal-only (shoal up calls it from its main thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/status.h"

namespace shoal {

class Coordinator {
 public:
  // Loads the tokenizer and chat template from the model directory and binds both listening sockets
  // (errors name the address in use). Nothing is served until Run().
  static StatusOr<std::unique_ptr<Coordinator>> Create(const EngineConfig& cfg);
  ~Coordinator();

  int http_port() const;
  int control_port() const;
  const std::string& model_name() const;

  // Serves until Stop(). Returns OK after a clean stop.
  Status Run();
  // Asks workers to shut down, ends in-flight requests with an error, and makes Run() return once the
  // workers have said goodbye (or after grace_ms).
  void Stop(int64_t grace_ms = 5000);
  // Whether at least `groups` groups are complete and healthy (what /ready reports). Thread-safe.
  bool ReadyGroups(int groups) const;
  // For shoal up's supervisor, thread-safe: the times group `name` has failed so far, and a note on
  // it (restarting, given up) for GET /v1/cluster.
  uint64_t GroupFailures(const std::string& name) const;
  void SetSupervisorNote(const std::string& name, std::string note);

  struct Impl;

 private:
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal
