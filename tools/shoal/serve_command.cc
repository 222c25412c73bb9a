// `shoal serve`: the coordinator alone (workers are launched separately, by mpirun or srun, with
// `shoal worker --coordinator HOST:PORT`).
// `shoal up`: a whole local cluster from one YAML file — the coordinator in this process and one
// `mpirun -np R shoal worker` job per engine group; waits until every group is ready, prints the URL,
// and on Ctrl-C (SIGINT/SIGTERM) stops the workers and the server cleanly. Once ready it supervises
// the groups: one that fails (its job exits, or the coordinator declares it failed — a rank died or
// stalled) has its whole job killed and is relaunched with backoff, within cluster.max_restarts per
// cluster.restart_window_s; its requests meanwhile wait to migrate (coordinator/request_table.h).
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/log.h"
#include "coordinator/coordinator.h"
#include "tools/shoal/commands.h"
#include "tools/shoal/engine_flags.h"

extern char** environ;

namespace shoal::cli {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }

void InstallStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a vanished client must not kill the server
}

struct ServeOptions {
  std::string config_path;
  std::string model;
  std::string host;
  int port = -1;
  int control_port = -1;
  std::string control_host;
  std::string print_url;  // serve: write the URL here once every configured group is ready
  std::string control_token_file;  // serve: write the control token here (mode 0600)
  std::string mpirun = "mpirun";
  int ready_timeout_s = 600;
  EngineFlags flags;  // the vLLM-style overrides (tools/shoal/engine_flags.h)
  bool print_config = false;  // print the effective config (YAML) and exit
};

// `shoal up` without --config: local-cpu.yaml where an installed shoal keeps it
// (<prefix>/share/shoal/configs, beside <prefix>/bin), else in the checkout a build-tree binary sits
// in (<checkout>/build/shoal → <checkout>/configs). Found from the binary's own location, so a copied
// or installed binary never depends on the tree it was built in.
StatusOr<std::string> DefaultConfigPath() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return Unavailable("no --config given, and cannot find this binary's location: " + ec.message());
  const fs::path dir = exe.parent_path();
  std::string tried;
  for (const fs::path& p : {dir / "../share/shoal/configs/local-cpu.yaml", dir / "../configs/local-cpu.yaml"}) {
    const fs::path q = p.lexically_normal();
    if (fs::is_regular_file(q, ec)) return q.string();
    tried += (tried.empty() ? "" : " or ") + q.string();
  }
  return NotFound("no --config given, and no default config at " + tried +
                  " (install shoal with `cmake --install`, or pass --config FILE)");
}

StatusOr<EngineConfig> LoadConfig(const ServeOptions& o, bool up) {
  EngineConfig cfg;
  std::string path = o.config_path;
  if (path.empty() && up) {
    SHOAL_ASSIGN_OR_RETURN(path, DefaultConfigPath());
  }
  if (!path.empty()) {
    SHOAL_ASSIGN_OR_RETURN(cfg, LoadEngineConfig(path));
    cfg.source = std::filesystem::absolute(path).string();
  }
  if (!o.model.empty()) cfg.model_path = o.model;
  if (!o.host.empty()) cfg.server.host = o.host;
  if (o.port >= 0) cfg.server.port = o.port;
  if (o.control_port >= 0) cfg.server.control_port = o.control_port;
  if (!o.control_host.empty()) cfg.server.control_host = o.control_host;
  SHOAL_RETURN_IF_ERROR(ApplyEngineFlags(o.flags, &cfg));
  return cfg;
}

std::string HostForUrl(const std::string& h) { return h == "0.0.0.0" ? "127.0.0.1" : h; }

// The host other machines reach this server by: a server bound to every interface is announced by
// this machine's name (what a cluster's nodes resolve), any other by its bind address.
std::string AnnouncedHost(const std::string& bind) {
  if (bind != "0.0.0.0" && bind != "::") return bind;
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') return name;
  return HostForUrl(bind);
}

// A numeric loopback address (127.0.0.0/8, ::1) or "localhost": reachable from this machine alone.
bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

void PrintTryIt(const Coordinator& c, const EngineConfig& cfg) {
  std::fprintf(stderr,
               "  try:  curl -N http://%s:%d/v1/chat/completions -H 'Content-Type: application/json' \\\n"
               "          -d '{\"model\": \"%s\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'\n",
               HostForUrl(cfg.server.host).c_str(), c.http_port(), c.model_name().c_str());
}

// 128 random bits as hex: the join secret shoal up and shoal serve make when none is given.
std::string RandomToken() {
  std::random_device rd;
  std::string s;
  for (int i = 0; i < 8; ++i) {
    char buf[9];
    std::snprintf(buf, sizeof(buf), "%08x", rd());
    s += std::string(buf).substr(0, 4);
  }
  return s;
}

// The control token the coordinator will require: SHOAL_CONTROL_TOKEN (when not empty), else
// server.control_token, else — for a control plane on loopback — a fresh random one, so that no other
// local user can join as a worker and receive prompts. (Off loopback an explicit token stays
// required: Coordinator::Create refuses to start without one.) Sets SHOAL_CONTROL_TOKEN for the
// processes this one starts; *generated says whether it was made here.
std::string EnsureControlToken(EngineConfig& cfg, bool* generated) {
  *generated = false;
  if (const char* env = std::getenv("SHOAL_CONTROL_TOKEN"); env != nullptr && *env != '\0') {
    cfg.server.control_token = env;
  }
  if (cfg.server.control_token.empty() && IsLoopback(cfg.server.control_host)) {
    cfg.server.control_token = RandomToken();
    *generated = true;
  }
  if (!cfg.server.control_token.empty()) setenv("SHOAL_CONTROL_TOKEN", cfg.server.control_token.c_str(), 1);
  return cfg.server.control_token;
}

// Writes the token to `path`, readable by this user alone.
Status WriteTokenFile(const std::string& path, const std::string& token) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return Unavailable("--control-token-file " + path + ": " + std::strerror(errno));
  const std::string line = token + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) return Unavailable("--control-token-file " + path + ": write failed");
  return Status::Ok();
}

Status RunServe(const ServeOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(EngineConfig cfg, LoadConfig(o, false));
  if (o.print_config) {
    std::fputs(EngineConfigYaml(cfg).c_str(), stdout);
    return Status::Ok();
  }
  bool generated = false;
  const std::string token = EnsureControlToken(cfg, &generated);
  SHOAL_ASSIGN_OR_RETURN(auto coord, Coordinator::Create(cfg));
  if (!o.control_token_file.empty()) SHOAL_RETURN_IF_ERROR(WriteTokenFile(o.control_token_file, token));
  InstallStopHandlers();
  log::Info("model %s on http://%s:%d; workers connect to %s:%d", coord->model_name().c_str(),
            AnnouncedHost(cfg.server.host).c_str(), coord->http_port(), cfg.server.control_host.c_str(),
            coord->control_port());
  if (generated) {
    log::Info("workers join with SHOAL_CONTROL_TOKEN=%s (generated%s; set SHOAL_CONTROL_TOKEN or "
              "server.control_token to choose it)",
                 token.c_str(), o.control_token_file.empty() ? "" : (", also in " + o.control_token_file).c_str());
  }
  std::thread loop([&] { (void)coord->Run(); });
  bool announced = o.print_url.empty();
  while (g_stop_signal == 0) {
    if (!announced && coord->ReadyGroups(std::max(1, cfg.cluster.groups))) {
      // Written whole, then renamed by whoever waits for it: a reader never sees half a URL.
      const std::string host = AnnouncedHost(cfg.server.host);
      const std::string url = "http://" + host + ":" + std::to_string(coord->http_port());
      const std::string tmp = o.print_url + ".partial";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (f != nullptr && std::fprintf(f, "%s\n", url.c_str()) > 0 && std::fclose(f) == 0 &&
          std::rename(tmp.c_str(), o.print_url.c_str()) == 0) {
        log::Info("every group is ready: %s", url.c_str());
      } else {
        log::Error("cannot write %s", o.print_url.c_str());
      }
      announced = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  log::Info("stopping");
  coord->Stop();
  loop.join();
  return Status::Ok();
}

// One mpirun job for one engine group, in its own process group so it can be signalled as a whole.
StatusOr<pid_t> SpawnGroup(const ServeOptions& o, const EngineConfig& cfg, int port, int index) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::string> args = {o.mpirun};
  if (geteuid() == 0) args.push_back("--allow-run-as-root");
  args.push_back("-x");  // the join secret, to every rank (also on other nodes)
  args.push_back("SHOAL_CONTROL_TOKEN");
  for (const char* a : {"--oversubscribe", "-np"}) args.emplace_back(a);
  args.push_back(std::to_string(cfg.cluster.ranks_per_group));
  args.push_back(self);
  args.push_back("worker");
  if (!cfg.source.empty()) {
    args.push_back("--config");
    args.push_back(cfg.source);
  }
  args.push_back("--model");
  args.push_back(cfg.model_path);
  args.push_back("--coordinator");
  args.push_back(cfg.server.control_host + ":" + std::to_string(port));
  args.push_back("--group");
  args.push_back("g" + std::to_string(index));
  for (std::string& a : WorkerArguments(o.flags)) args.push_back(std::move(a));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, o.mpirun.c_str(), nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Unavailable("cannot start " + o.mpirun + ": " + std::strerror(rc));
  return pid;
}

// Waits for the worker jobs to end; escalates to SIGTERM and then SIGKILL of their process groups.
void ReapGroups(std::vector<pid_t>& pids, int64_t grace_ms) {
  auto reap = [&] {
    for (pid_t& p : pids) {
      if (p > 0 && waitpid(p, nullptr, WNOHANG) == p) p = 0;
    }
    return std::all_of(pids.begin(), pids.end(), [](pid_t p) { return p == 0; });
  };
  for (int sig : {0, SIGTERM, SIGKILL}) {
    if (sig != 0) {
      for (pid_t p : pids) {
        if (p > 0) kill(-p, sig);
      }
    }
    for (int64_t waited = 0; waited < grace_ms; waited += 50) {
      if (reap()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

// One engine group's mpirun job under shoal up's supervision.
struct GroupJob {
  int index = 0;
  std::string name;  // "g<index>", the group name its ranks join with
  pid_t pid = 0;     // 0 while not running
  uint64_t failures_seen = 0;                                   // Coordinator::GroupFailures already handled
  std::deque<std::chrono::steady_clock::time_point> restarts;  // within cluster.restart_window_s
  std::optional<std::chrono::steady_clock::time_point> restart_at;
  bool given_up = false;
};

// The job's process group to the last process (a stopped rank included: SIGKILL ends it too), then
// its mpirun reaped, so no rank of a failed incarnation outlives it.
void KillJob(GroupJob& job) {
  if (job.pid <= 0) return;
  kill(-job.pid, SIGKILL);
  int wst = 0;
  while (waitpid(job.pid, &wst, 0) < 0 && errno == EINTR) {
  }
  job.pid = 0;
}

Status RunUp(const ServeOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(EngineConfig cfg, LoadConfig(o, true));
  if (o.print_config) {
    std::fputs(EngineConfigYaml(cfg).c_str(), stdout);
    return Status::Ok();
  }
  if (cfg.cluster.ranks_per_group % cfg.attention_tp != 0) {
    return InvalidArgument("parallel.attention_tp (--tensor-parallel-size) " + std::to_string(cfg.attention_tp) +
                           " does not divide cluster.ranks_per_group " + std::to_string(cfg.cluster.ranks_per_group));
  }
  // shoal up's workers are its own children: a token always (an empty SHOAL_CONTROL_TOKEN is unset).
  bool generated = false;
  if (EnsureControlToken(cfg, &generated).empty()) {
    cfg.server.control_token = RandomToken();
    setenv("SHOAL_CONTROL_TOKEN", cfg.server.control_token.c_str(), 1);
  }
  SHOAL_ASSIGN_OR_RETURN(auto coord, Coordinator::Create(cfg));
  InstallStopHandlers();
  std::thread loop([&] { (void)coord->Run(); });
  std::vector<GroupJob> jobs(static_cast<size_t>(cfg.cluster.groups));
  Status st = Status::Ok();
  for (int g = 0; g < cfg.cluster.groups && st.ok(); ++g) {
    jobs[g].index = g;
    jobs[g].name = "g" + std::to_string(g);
    StatusOr<pid_t> pid = SpawnGroup(o, cfg, coord->control_port(), g);
    if (pid.ok()) jobs[g].pid = *pid; else st = pid.status();
  }
  log::Info("model %s, %d group(s) of %d rank(s); loading...", coord->model_name().c_str(),
               cfg.cluster.groups, cfg.cluster.ranks_per_group);
  const auto t0 = std::chrono::steady_clock::now();
  const auto window = std::chrono::seconds(cfg.cluster.restart_window_s);
  bool ready = false;
  while (st.ok() && g_stop_signal == 0) {
    const auto now = std::chrono::steady_clock::now();
    for (GroupJob& job : jobs) {
      std::string what;
      int wst = 0;
      if (job.pid > 0 && waitpid(job.pid, &wst, WNOHANG) == job.pid) {
        job.pid = 0;
        what = WIFEXITED(wst) ? "exited with status " + std::to_string(WEXITSTATUS(wst))
                              : "was killed by signal " + std::to_string(WTERMSIG(wst));
      }
      // The coordinator saw the group fail (a rank died or stalled past its heartbeat): its job may
      // still run, with a stopped or hung rank in it.
      const uint64_t failures = coord->GroupFailures(job.name);
      if (failures > job.failures_seen) {
        job.failures_seen = failures;
        if (what.empty()) what = "failed (GET /v1/cluster has the reason)";
      }
      if (!what.empty() && !ready) {
        st = Unavailable("worker group " + job.name + " " + what +
                         " before the cluster was ready (its output above says why)");
        break;
      }
      if (!what.empty() && !job.restart_at && !job.given_up) {
        KillJob(job);
        while (!job.restarts.empty() && now - job.restarts.front() > window) job.restarts.pop_front();
        if (static_cast<int>(job.restarts.size()) >= cfg.cluster.max_restarts) {
          job.given_up = true;
          const std::string note = "down: " + what + " after " + std::to_string(job.restarts.size()) +
                                   " relaunches within cluster.restart_window_s (" +
                                   std::to_string(cfg.cluster.restart_window_s) +
                                   " s); not relaunched again (cluster.max_restarts)";
          log::Error("worker group %s %s", job.name.c_str(), note.c_str());
          coord->SetSupervisorNote(job.name, note);
        } else {
          // 1, 2, 4 … 30 s: a group that fails at once again is not relaunched in a tight loop.
          const int backoff_s = std::min(30, 1 << std::min<int>(5, static_cast<int>(job.restarts.size())));
          job.restart_at = now + std::chrono::seconds(backoff_s);
          const std::string note = "relaunching in " + std::to_string(backoff_s) + " s: the group " + what;
          log::Warn("worker group %s %s; relaunching in %d s", job.name.c_str(), what.c_str(), backoff_s);
          coord->SetSupervisorNote(job.name, note);
        }
      }
      if (job.restart_at && now >= *job.restart_at) {
        job.restart_at.reset();
        job.restarts.push_back(now);
        StatusOr<pid_t> pid = SpawnGroup(o, cfg, coord->control_port(), job.index);
        if (pid.ok()) {
          job.pid = *pid;
          coord->SetSupervisorNote(job.name, "relaunched (" + std::to_string(job.restarts.size()) +
                                                 " relaunches within the window)");
          log::Info("worker group %s relaunched", job.name.c_str());
        } else {
          job.given_up = true;
          coord->SetSupervisorNote(job.name, "down: cannot relaunch: " + pid.status().message());
          log::Error("worker group %s: %s", job.name.c_str(), pid.status().ToString().c_str());
        }
      }
    }
    if (!st.ok()) break;
    if (!ready && coord->ReadyGroups(cfg.cluster.groups)) {
      ready = true;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      log::Info("ready in %.1f s: http://%s:%d (Ctrl-C stops)", secs,
                   HostForUrl(cfg.server.host).c_str(), coord->http_port());
      std::printf("http://%s:%d\n", HostForUrl(cfg.server.host).c_str(), coord->http_port());
      std::fflush(stdout);
      PrintTryIt(*coord, cfg);
    }
    if (!ready && std::chrono::steady_clock::now() - t0 > std::chrono::seconds(o.ready_timeout_s)) {
      st = DeadlineExceeded("the cluster was not ready within " + std::to_string(o.ready_timeout_s) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  log::Info("stopping");
  coord->Stop(5000);
  loop.join();
  std::vector<pid_t> pids;
  for (const GroupJob& job : jobs) pids.push_back(job.pid);
  ReapGroups(pids, 5000);
  return st;
}

void AddCommonOptions(CLI::App* cmd, ServeOptions* o, bool up) {
  cmd->add_option("--config", o->config_path, "shoal YAML config (model, engine, server, cluster)")
      ->default_str(up ? "share/shoal/configs/local-cpu.yaml beside bin/" : "none");
  cmd->add_option("--model", o->model, "Hugging Face checkpoint directory (overrides model.path)")->default_str("model.path");
  cmd->add_option("--host", o->host, "HTTP bind address (overrides server.host)")->default_str("server.host: 127.0.0.1");
  cmd->add_option("--port", o->port, "HTTP port (overrides server.port; 0 = any free port)")
      ->check(CLI::Range(0, 65535))
      ->default_str("server.port: 8000");
  cmd->add_option("--control-port", o->control_port, "Port workers connect to (overrides server.control_port)")
      ->check(CLI::Range(0, 65535))
      ->default_str("server.control_port: 0 (any free port)");
  cmd->add_option("--control-host", o->control_host, "Address workers connect to (overrides server.control_host)")
      ->default_str("server.control_host: 127.0.0.1");
  cmd->add_flag("--print-config", o->print_config,
                "Print the effective configuration (the file, then these flags) as YAML and exit; secrets show as <set>");
}

}  // namespace

void AddServeCommands(CLI::App& app, int* exit_code) {
  auto serve = std::make_shared<ServeOptions>();
  CLI::App* s = app.add_subcommand("serve", "The coordinator: an OpenAI-compatible server in front of engine groups");
  AddCommonOptions(s, serve.get(), false);
  AddEngineFlags(s, &serve->flags, FlagSet::kCoordinator);
  s->add_option("--print-url", serve->print_url, "Write the URL to this file once every configured group is ready");
  s->add_option("--control-token-file", serve->control_token_file,
                "Write the control token workers must present to this file (mode 0600); without SHOAL_CONTROL_TOKEN "
                "or server.control_token, shoal serve makes a random one");
  s->callback([serve, exit_code] {
    log::SetTag("serve");
    Status st = RunServe(*serve);
    if (!st.ok()) {
      log::Error("%s", st.ToString().c_str());
      *exit_code = 1;
    }
  });

  auto up = std::make_shared<ServeOptions>();
  CLI::App* u = app.add_subcommand("up", "Start a local cluster (coordinator + mpirun worker groups) from one config");
  AddCommonOptions(u, up.get(), true);
  AddEngineFlags(u, &up->flags, FlagSet::kAll);
  u->add_option("--mpirun", up->mpirun, "mpirun to launch worker groups with");
  u->add_option("--ready-timeout", up->ready_timeout_s, "Seconds to wait for every group to be ready")
      ->check(CLI::Range(1, 24 * 3600));
  u->callback([up, exit_code] {
    log::SetTag("up");
    Status st = RunUp(*up);
    if (!st.ok()) {
      log::Error("%s", st.ToString().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace shoal::cli
