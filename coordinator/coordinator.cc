// Coordinator: wires the owners together and runs them — the served model (read-only), the metrics
// registry (thread-safe), the control plane (control thread: ranks, routing, the request table), the
// HTTP front end (session threads) and the text pool (templates, tokenizing).
#include "coordinator/coordinator.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>

#include <boost/asio/thread_pool.hpp>

#include "coordinator/control_plane.h"
#include "coordinator/http_server.h"
#include "coordinator/served_model.h"
#include "coordinator/vllm_metric_names.h"

namespace shoal {

using namespace coord;

// Members are destroyed in reverse order: the control plane (whose request table holds session
// objects bound to the front end's io_contexts) goes before the front end.
struct Coordinator::Impl {
  EngineConfig cfg;  // with SHOAL_API_KEY and SHOAL_CONTROL_TOKEN folded in
  ServedModel model;
  Metrics metrics;
  asio::thread_pool text_pool;
  HttpFrontEnd front;
  ControlPlane control;
  HandlerEnv env;

  Impl(EngineConfig c, ServedModel m, int text_threads)
      : cfg(std::move(c)),
        model(std::move(m)),
        text_pool(static_cast<size_t>(text_threads)),
        front(cfg, metrics),
        control(cfg, model, cfg.server.control_token, metrics, front),
        env{cfg, model, metrics, control, text_pool, front} {
    // vLLM puts the served model's name on every series; dashboards filter on it.
    metrics.SetConstantLabels({{"model_name", model.name}});
    if (cfg.server.metrics_vllm_names) AddVllmMetricNames(metrics);
  }
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Coordinator::~Coordinator() {
  if (!impl_) return;
  // Run may never have been called: stop whatever threads exist before the members go.
  impl_->front.Stop();
  impl_->front.Join();
  impl_->text_pool.stop();
  impl_->text_pool.join();
}

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const EngineConfig& config) {
  EngineConfig cfg = config;
  if (const char* t = std::getenv("SHOAL_CONTROL_TOKEN"); t != nullptr && *t != '\0') cfg.server.control_token = t;
  if (const char* k = std::getenv("SHOAL_API_KEY"); k != nullptr && *k != '\0') cfg.server.api_keys.emplace_back(k);
  {
    boost::system::error_code ec;
    const auto addr = asio::ip::make_address(cfg.server.control_host, ec);
    if (!ec && !addr.is_loopback() && cfg.server.control_token.empty()) {
      return InvalidArgument("server.control_host " + cfg.server.control_host +
                             " is reachable from other machines: set SHOAL_CONTROL_TOKEN (or server.control_token) "
                             "so that only your workers can join and receive prompts");
    }
  }
  // Every connection is a descriptor: take the hard limit (the soft one is often 1024) so the
  // connection caps, not the process limit, decide when clients are turned away.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  SHOAL_ASSIGN_OR_RETURN(ServedModel model, ServedModel::Load(cfg));
  const int text_threads = cfg.server.text_threads > 0 ? cfg.server.text_threads : 2;
  auto impl = std::make_unique<Impl>(std::move(cfg), std::move(model), text_threads);
  SHOAL_RETURN_IF_ERROR(impl->front.Bind());
  SHOAL_RETURN_IF_ERROR(impl->control.Bind());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

int Coordinator::http_port() const { return impl_->front.port(); }
int Coordinator::control_port() const { return impl_->control.port(); }
const std::string& Coordinator::model_name() const { return impl_->model.name; }

uint64_t Coordinator::GroupFailures(const std::string& name) const { return impl_->control.GroupFailures(name); }

void Coordinator::SetSupervisorNote(const std::string& name, std::string note) {
  impl_->control.SetSupervisorNote(name, std::move(note));
}

bool Coordinator::ReadyGroups(int groups) const {
  const int ready = impl_->control.ready_groups();
  return ready >= groups && impl_->control.known_groups() == ready;
}

Status Coordinator::Run() {
  Impl& c = *impl_;
  c.front.Start(c.env);
  c.control.Start();
  c.control.io().run();
  c.front.Stop();
  c.front.Join();
  return Status::Ok();
}

void Coordinator::Stop(int64_t grace_ms) {
  Impl* c = impl_.get();
  c->front.CloseListener();
  c->control.Stop(grace_ms, [c] {
    // The ranks are gone (or the grace is over): the sessions have had their 503s; end everything.
    c->front.Stop();
    c->control.io().stop();
  });
}

}  // namespace shoal
