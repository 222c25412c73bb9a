// The HTTP/1.1 front end: listens, runs sessions on server.http_threads threads, enforces the limits
// on what clients send (connections, header and body sizes, idle time) and the API keys, and
// dispatches each request by path through one route table (routes.cc).
//
// Each session thread has its own io_context; a connection stays on the thread that accepted it, so a
// session and everything it owns (its requests' TokenStreams) are single-threaded. The front end is
// also the request table's Delivery: events the control thread delivers are batched per session
// thread and handed over once per batch, so a step of the workers costs one hand-over per thread, not
// one per token.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/thread_pool.hpp>

#include "common/config.h"
#include "coordinator/asio.h"
#include "coordinator/http_util.h"
#include "coordinator/metrics.h"
#include "coordinator/request_table.h"
#include "coordinator/served_model.h"

namespace shoal::coord {

class ControlPlane;
class HttpFrontEnd;
class TokenStream;

// What a handler may use. The control thread's state is reached only through ControlPlane's
// any-thread methods; slow text work goes to text_pool.
struct HandlerEnv {
  const EngineConfig& cfg;
  const ServedModel& model;
  Metrics& metrics;
  ControlPlane& control;
  asio::thread_pool& text_pool;
  const HttpFrontEnd& front;
};

// One request being answered, on its session's thread.
struct Exchange {
  beast::tcp_stream& stream;
  const Request& req;
  std::string path;  // the target without its query
  size_t slot = 0;   // the session thread
};

// Returns false when the connection must close.
using Handler = awaitable<bool> (*)(HandlerEnv& env, Exchange& x);

struct Route {
  const char* path;
  http::verb method;
  Handler handler;
};
// Every endpoint (routes.cc). Unknown paths get 404, known paths with another method 405, and the
// request counter's path label is one of these paths or "other".
std::span<const Route> Routes();

class HttpFrontEnd : public Delivery {
 public:
  HttpFrontEnd(const EngineConfig& cfg, Metrics& metrics);
  ~HttpFrontEnd() override;

  // Binds server.host:port (errors name the address).
  Status Bind();
  int port() const;
  size_t threads() const { return slots_.size(); }
  int connections() const { return connections_.load(); }

  // Starts the session threads and the accept loop. `env` must outlive Join().
  void Start(HandlerEnv& env);
  // Any thread: no new connections.
  void CloseListener();
  // Any thread: stops every session thread (sessions in flight are dropped).
  void Stop();
  void Join();

  // Delivery (control thread).
  void Deliver(const std::shared_ptr<RequestSink>& sink, RequestEvent event) override;
  void Flush() override;
  void Release(std::shared_ptr<RequestSink> sink) override;

  // A session thread's executor, for objects a session owns.
  asio::any_io_executor executor(size_t slot) const { return slots_[slot]->io.get_executor(); }

 private:
  struct Item {
    std::shared_ptr<TokenStream> stream;
    RequestEvent event;
  };
  struct Slot {
    // Declared first, destroyed last: the items below hold streams whose timers belong to it.
    asio::io_context io{1};
    std::mutex mu;
    std::vector<Item> inbox;  // guarded by mu: handed over, not yet taken by the session thread
    bool posted = false;      // guarded by mu: a hand-over is queued on io
    std::vector<Item> outbox;    // control thread: this batch's events, until Flush
    std::vector<Item> draining;  // session thread: the events being pushed
    std::thread thread;
  };

  awaitable<void> AcceptLoop(HandlerEnv& env);
  awaitable<void> Session(HandlerEnv& env, tcp::socket socket, size_t slot);
  void Drain(Slot& s);

  const EngineConfig& cfg_;
  Metrics& metrics_;
  // Touched by sessions' destructors, which may run when a slot's io_context is destroyed.
  std::atomic<int> connections_{0};
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<tcp::acceptor> acceptor_;  // on slot 0's io_context
  size_t next_slot_ = 0;
  std::vector<size_t> dirty_;  // control thread: slots with events since the last Flush
};

}  // namespace shoal::coord
