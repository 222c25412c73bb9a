// `shoal bench a2a`: the expert exchange (dispatch + combine) against raw MPI_Alltoallv, in the style
// of nccl-tests. Run under mpirun -np N.
//
// For each MoE shape (hidden, top-k) and tokens per rank, every rank routes its tokens to random
// distinct experts (uniform, seeded), then times ExpertExchange::Dispatch + Combine and, in the same
// run on the same byte counts, two blocking MPI_Alltoallv calls (the dispatch payload and the combine
// payload; ours also exchanges the row counts first and packs rows per destination, the raw side
// sends buffers that are already packed). The weighted sum after combine is not timed.
// Bytes: what a rank sends in both phases, self included (nccl-tests' "size"); algbw = bytes / time,
// busbw = algbw × (N-1)/N. Times: the slowest rank's mean per round, median of 8 alternating rounds. "wrong" counts elements of the
// dispatched rows and combined outputs that differ from what their encoded origin implies.
// --json FILE (rank 0) records every size with the job's shape — ranks, hosts, ranks per host — so
// that `shoal plan --calibrate` can take the network efficiency from a run across hosts.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "comm/expert_exchange.h"
#include "comm/mpi/mpi_group.h"
#include "comm/placement.h"
#include "tools/shoal/commands.h"

#include <nlohmann/json.hpp>

namespace shoal::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct A2aOptions {
  std::vector<int64_t> hidden = {2048, 7168};
  std::vector<int> top_k = {2, 8};
  int experts = 128;
  int64_t min_tokens = 1, max_tokens = 4096;
  int warmup = 3;
  double seconds_per_size = 0.3;  // iterations per size: enough to fill this, between 8 and 400
  int64_t max_mib = 3072;         // skip sizes whose buffers would exceed this per rank
  int64_t timeout_ms = 120000;
  std::string json_path;  // rank 0 writes the results here
};

// Hosts of the job and ranks per host (MPI's shared-memory split), for the JSON: bytes to ranks on
// other hosts cross the network, the rest stays in the host.
struct JobShape {
  int hosts = 1, max_per_host = 1, min_per_host = 1;
};

StatusOr<JobShape> ShapeOfJob(comm::Group& g, Deadline deadline) {
  MPI_Comm node;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) {
    return Internal("MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) failed");
  }
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  std::vector<int64_t> hosts = {local_rank == 0 ? 1 : 0};
  std::vector<int64_t> sizes = {local_size, -local_size};
  SHOAL_RETURN_IF_ERROR(g.AllReduceSum(hosts, deadline));
  SHOAL_RETURN_IF_ERROR(g.AllReduceMax(sizes, deadline));
  return JobShape{static_cast<int>(hosts[0]), static_cast<int>(sizes[0]), static_cast<int>(-sizes[1])};
}

struct Routing {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

// Top-k distinct experts per token, uniform; weights 1/K (exact, so combined rows are exact).
Routing MakeRouting(int origin, int64_t T, int E, int K, uint64_t salt) {
  std::mt19937_64 rng(salt * 7919 + origin);
  Routing r;
  r.ids.resize(static_cast<size_t>(T * K));
  r.weights.assign(static_cast<size_t>(T * K), 1.0f / K);
  std::vector<int32_t> pick(K);
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K;) {
      const int32_t e = static_cast<int32_t>(rng() % E);
      if (std::find(pick.begin(), pick.begin() + j, e) != pick.begin() + j) continue;
      pick[j++] = e;
    }
    std::copy(pick.begin(), pick.end(), r.ids.begin() + t * K);
  }
  return r;
}

// Element i of token t's row on rank o: small integers (exact under the 1/K weighted sums).
float Payload(int o, int64_t t, int64_t i) {
  if (i == 0) return static_cast<float>(o);
  if (i == 1) return static_cast<float>(t);
  return static_cast<float>((o * 31 + t * 7 + i) % 251);
}

struct Result {
  double ours_us = 0, raw_us = 0;
  double shm_us = 0;  // the shared-memory exchange (0: the group cannot share memory)
  int64_t bytes = 0;     // mean over ranks of bytes sent per iteration (both phases)
  int64_t per_peer = 0;  // mean dispatch bytes to one peer
  int64_t wrong = 0;
};

int64_t Check(comm::ExpertExchange& ex, const std::vector<Routing>& all, int me, int K, int64_t H,
              const Placement& placement, const std::vector<float>& out, int64_t T) {
  int64_t wrong = 0;
  const std::vector<int>& local = ex.local_experts();
  for (size_t li = 0; li < local.size(); ++li) {
    const int e = local[li];
    for (int64_t r = ex.expert_offsets()[li]; r < ex.expert_offsets()[li + 1]; ++r) {
      const float* row = ex.expert_rows() + r * H;
      const int o = static_cast<int>(row[0]);
      const int64_t t = static_cast<int64_t>(row[1]);
      bool routed = o >= 0 && o < static_cast<int>(all.size()) && t >= 0 && t * K < static_cast<int64_t>(all[o].ids.size());
      if (routed) {
        const auto* ids = all[o].ids.data() + t * K;
        routed = std::find(ids, ids + K, e) != ids + K && placement.RankFor(e, t + o) == me;
      }
      if (!routed) {
        wrong += H;
        continue;
      }
      for (int64_t i = 0; i < H; ++i) wrong += row[i] != Payload(o, t, i);
    }
  }
  // Identity experts: every (token, choice) comes home unchanged, and with weights 1/K the sum too.
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const float* row = ex.combined_row(t, j);
      for (int64_t i = 0; i < H; ++i) wrong += row[i] != Payload(me, t, i);
    }
    for (int64_t i = 0; i < H; ++i) wrong += out[t * H + i] != Payload(me, t, i);
  }
  return wrong;
}

StatusOr<Result> RunSize(comm::MpiGroup& g, const A2aOptions& o, int64_t H, int K, int64_t T, uint64_t salt) {
  const int R = g.size(), me = g.rank();
  SHOAL_ASSIGN_OR_RETURN(Placement placement, Placement::Balanced(o.experts, R));
  SHOAL_ASSIGN_OR_RETURN(comm::ExpertExchange ex, comm::ExpertExchange::Create(&g, &placement, H, K));
  // The shared-memory exchange, with room for every row of the step on any one rank.
  SHOAL_ASSIGN_OR_RETURN(comm::ExpertExchange shm,
                         comm::ExpertExchange::Create(&g, &placement, H, K,
                                                      {.shared_memory = true, .shared_rows = std::max<int64_t>(1, R * T * K)}));
  std::vector<Routing> all;
  for (int r = 0; r < R; ++r) all.push_back(MakeRouting(r, T, o.experts, K, salt));
  std::vector<float> x(static_cast<size_t>(T * H)), out(static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < H; ++i) x[t * H + i] = Payload(me, t, i);
  }
  auto deadline = [&] { return Deadline::AfterMs(o.timeout_ms); };

  // One checked round (identity experts), which also gives the byte counts for the raw baseline.
  SHOAL_RETURN_IF_ERROR(ex.Dispatch(x.data(), T, all[me].ids.data(), all[me].weights.data(), deadline()));
  // Identity experts: the outputs are the rows, already in place.
  SHOAL_RETURN_IF_ERROR(ex.Combine(deadline()));
  ex.WeightedSum(out.data());
  Result res;
  res.wrong = Check(ex, all, me, K, H, placement, out, T);
  const bool with_shm = shm.has_shared_window();
  if (with_shm) {  // checked the same way
    SHOAL_RETURN_IF_ERROR(shm.Dispatch(x.data(), T, all[me].ids.data(), all[me].weights.data(), deadline()));
    SHOAL_RETURN_IF_ERROR(shm.Combine(deadline()));
    std::vector<float> shm_out(out.size());
    shm.WeightedSum(shm_out.data());
    res.wrong += Check(shm, all, me, K, H, placement, shm_out, T);
    res.wrong += shm.used_shared_memory() ? 0 : 1;
  }

  // Per-peer byte counts of the two phases, as the exchange moved them.
  std::vector<int> d_send(R), d_recv(R), c_send(R), c_recv(R);
  for (int p = 0; p < R; ++p) {
    d_send[p] = c_recv[p] = static_cast<int>(ex.rows_to()[p] * H * 4);
    d_recv[p] = c_send[p] = static_cast<int>(ex.rows_from()[p] * H * 4);
  }
  auto displs = [](const std::vector<int>& c) {
    std::vector<int> d(c.size(), 0);
    for (size_t i = 1; i < c.size(); ++i) d[i] = d[i - 1] + c[i - 1];
    return d;
  };
  const int64_t d_total = std::accumulate(d_send.begin(), d_send.end(), int64_t{0});
  const int64_t c_total = std::accumulate(c_send.begin(), c_send.end(), int64_t{0});
  std::vector<int64_t> sums = {d_total + c_total, d_total};
  SHOAL_RETURN_IF_ERROR(g.AllReduceSum(sums, deadline()));
  res.bytes = sums[0] / R;
  res.per_peer = sums[1] / R / R;
  std::vector<char> sbuf(static_cast<size_t>(std::max(d_total, c_total)) + 1);
  std::vector<char> rbuf(static_cast<size_t>(std::max(std::accumulate(d_recv.begin(), d_recv.end(), int64_t{0}),
                                                      std::accumulate(c_recv.begin(), c_recv.end(), int64_t{0}))) + 1);
  const auto dsd = displs(d_send), drd = displs(d_recv), csd = displs(c_send), crd = displs(c_recv);

  int warmup = o.warmup;
  auto time_loop = [&](auto&& body, int iters) -> StatusOr<double> {
    for (int i = 0; i < warmup; ++i) SHOAL_RETURN_IF_ERROR(body());
    SHOAL_RETURN_IF_ERROR(g.Barrier(deadline()));
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) SHOAL_RETURN_IF_ERROR(body());
    std::vector<int64_t> ns = {std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()};
    SHOAL_RETURN_IF_ERROR(g.AllReduceMax(ns, deadline()));
    return ns[0] / 1e3 / iters;
  };
  auto ours = [&]() -> Status {
    SHOAL_RETURN_IF_ERROR(ex.Dispatch(x.data(), T, all[me].ids.data(), all[me].weights.data(), deadline()));
    return ex.Combine(deadline());
  };
  auto ours_shm = [&]() -> Status {
    SHOAL_RETURN_IF_ERROR(shm.Dispatch(x.data(), T, all[me].ids.data(), all[me].weights.data(), deadline()));
    return shm.Combine(deadline());
  };
  auto raw = [&]() -> Status {
    int rc = MPI_Alltoallv(sbuf.data(), d_send.data(), dsd.data(), MPI_BYTE, rbuf.data(), d_recv.data(), drd.data(),
                           MPI_BYTE, g.comm());
    if (rc == MPI_SUCCESS) {
      rc = MPI_Alltoallv(sbuf.data(), c_send.data(), csd.data(), MPI_BYTE, rbuf.data(), c_recv.data(), crd.data(),
                         MPI_BYTE, g.comm());
    }
    return rc == MPI_SUCCESS ? Status::Ok() : Unavailable("MPI_Alltoallv failed");
  };
  // Iterations from one probe of the raw call, agreed by all ranks; warm-up only before that probe
  // and the first timed rounds.
  SHOAL_ASSIGN_OR_RETURN(double probe_us, time_loop(raw, 1));
  for (int i = 0; i < o.warmup; ++i) SHOAL_RETURN_IF_ERROR(ours());
  for (int i = 0; with_shm && i < o.warmup; ++i) SHOAL_RETURN_IF_ERROR(ours_shm());
  warmup = 0;
  std::vector<int64_t> iters = {
      std::clamp<int64_t>(static_cast<int64_t>(o.seconds_per_size * 1e6 / 2 / std::max(probe_us, 1.0)), 8, 400)};
  SHOAL_RETURN_IF_ERROR(g.AllReduceMax(iters, deadline()));
  // Alternating rounds, median of each side: bursts of noise on a shared machine hit both sides
  // alike and do not drag the result.
  constexpr int kRounds = 8;
  const int per_round = static_cast<int>(std::max<int64_t>(1, iters[0] / kRounds));
  std::vector<double> ours_t, raw_t, shm_t;
  for (int round = 0; round < kRounds; ++round) {
    SHOAL_ASSIGN_OR_RETURN(double a, time_loop(ours, per_round));
    SHOAL_ASSIGN_OR_RETURN(double b, time_loop(raw, per_round));
    ours_t.push_back(a);
    raw_t.push_back(b);
    if (with_shm) {
      SHOAL_ASSIGN_OR_RETURN(double c, time_loop(ours_shm, per_round));
      shm_t.push_back(c);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  const double ours_us = median(ours_t), raw_us = median(raw_t);
  res.ours_us = ours_us;
  res.raw_us = raw_us;
  res.shm_us = with_shm ? median(shm_t) : 0;
  std::vector<int64_t> wrong = {res.wrong};
  SHOAL_RETURN_IF_ERROR(g.AllReduceSum(wrong, deadline()));
  res.wrong = wrong[0];
  return res;
}

std::string Bytes(int64_t b) {
  char buf[32];
  if (b >= (int64_t{1} << 20)) {
    std::snprintf(buf, sizeof buf, "%.1fM", b / 1048576.0);
  } else if (b >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1fK", b / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(b));
  }
  return buf;
}

Status RunA2aInGroup(const A2aOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(auto world, comm::MpiGroup::Create(MPI_COMM_WORLD));
  comm::MpiGroup& g = *world;
  const int R = g.size();
  const bool root = g.rank() == 0;
  if (root) {
    std::printf("# shoal bench a2a: %d ranks (%s), %d experts placed balanced, f32 rows\n", R, g.backend().c_str(),
                o.experts);
    std::printf("# ours = ExpertExchange dispatch + combine by messages; shm = the same through a shared window "
                "(ranks on one host); raw = MPI_Alltoallv x2 on the same byte counts\n");
    std::printf("# %6s %4s %6s %9s %9s | %10s %8s %8s %7s | %10s %8s %8s | %9s | %10s %9s\n", "hidden", "topk", "tokens",
                "bytes", "per-peer", "ours(us)", "algbw", "busbw", "#wrong", "raw(us)", "algbw", "busbw", "raw/ours",
                "shm(us)", "raw/shm");
  }
  SHOAL_ASSIGN_OR_RETURN(JobShape shape, ShapeOfJob(g, Deadline::AfterMs(o.timeout_ms)));
  nlohmann::json sizes = nlohmann::json::array();
  int64_t total_wrong = 0;
  std::vector<double> bw_ratios;       // raw/ours time (= ours/raw bandwidth) at >= 256 KiB per peer
  std::vector<double> latency_excess;  // ours - (1.3 raw + 10 us) at <= 128 tokens per rank
  std::vector<double> shm_ratios, shm_latency_excess;  // the same for the shared-memory exchange
  for (int64_t H : o.hidden) {
    for (int K : o.top_k) {
      if (K > o.experts) continue;
      for (int64_t T = o.min_tokens; T <= o.max_tokens; T *= 2) {
        // Rough per-rank footprint: packed rows, expert rows in and out (×2 for skew), raw buffers.
        const int64_t est = T * K * H * 4 * (7 + g.size());  // + the shared window's rows
        if (T * K * H * 4 > INT32_MAX) {  // MPI_Alltoallv's counts and displacements are ints
          if (root) std::printf("  %6lld %4d %6lld   skipped: more than 2 GiB per rank for MPI_Alltoallv's int counts\n",
                                static_cast<long long>(H), K, static_cast<long long>(T));
          continue;
        }
        if (est > o.max_mib * (int64_t{1} << 20)) {
          if (root) std::printf("  %6lld %4d %6lld   skipped: ~%lld MiB per rank exceeds --max-mib\n",
                                static_cast<long long>(H), K, static_cast<long long>(T),
                                static_cast<long long>(est >> 20));
          continue;
        }
        SHOAL_ASSIGN_OR_RETURN(Result r, RunSize(g, o, H, K, T, static_cast<uint64_t>(H * 131 + K * 17 + T)));
        total_wrong += r.wrong;
        const double ours_bw = r.bytes / (r.ours_us * 1e3), raw_bw = r.bytes / (r.raw_us * 1e3);
        const double bus = R > 1 ? static_cast<double>(R - 1) / R : 1.0;
        if (root) {
          std::printf("  %6lld %4d %6lld %9s %9s | %10.1f %8.3f %8.3f %7lld | %10.1f %8.3f %8.3f | %9.3f | %10.1f %9.3f\n",
                      static_cast<long long>(H), K, static_cast<long long>(T), Bytes(r.bytes).c_str(),
                      Bytes(r.per_peer).c_str(), r.ours_us, ours_bw, ours_bw * bus, static_cast<long long>(r.wrong),
                      r.raw_us, raw_bw, raw_bw * bus, r.raw_us / r.ours_us, r.shm_us,
                      r.shm_us > 0 ? r.raw_us / r.shm_us : 0.0);
          std::fflush(stdout);
        }
        sizes.push_back({{"hidden", H}, {"topk", K}, {"tokens", T}, {"bytes", r.bytes}, {"per_peer", r.per_peer},
                         {"ours_us", r.ours_us}, {"raw_us", r.raw_us}, {"shm_us", r.shm_us}, {"wrong", r.wrong}});
        if (r.per_peer >= 256 * 1024) bw_ratios.push_back(r.raw_us / r.ours_us);
        if (T <= 128) latency_excess.push_back(r.ours_us - (1.3 * r.raw_us + 10.0));
        if (r.shm_us > 0 && r.per_peer >= 256 * 1024) shm_ratios.push_back(r.raw_us / r.shm_us);
        if (r.shm_us > 0 && T <= 128) shm_latency_excess.push_back(r.shm_us - (1.3 * r.raw_us + 10.0));
      }
    }
  }
  if (root) {
    std::printf("# wrong elements: %lld\n", static_cast<long long>(total_wrong));
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    };
    if (!bw_ratios.empty()) {
      const auto met = std::count_if(bw_ratios.begin(), bw_ratios.end(), [](double x) { return x >= 0.85; });
      std::printf("# bandwidth goal, ours/raw >= 0.85 at >= 256 KiB per peer: met at %lld of %zu sizes; "
                  "median %.3f, worst %.3f\n",
                  static_cast<long long>(met), bw_ratios.size(), median(bw_ratios),
                  *std::min_element(bw_ratios.begin(), bw_ratios.end()));
    }
    if (!shm_ratios.empty()) {
      const auto met = std::count_if(shm_ratios.begin(), shm_ratios.end(), [](double x) { return x >= 1.0; });
      std::printf("# shared memory, shm/raw bandwidth >= 1.0 at >= 256 KiB per peer: met at %lld of %zu sizes; "
                  "median %.3f, worst %.3f\n",
                  static_cast<long long>(met), shm_ratios.size(), median(shm_ratios),
                  *std::min_element(shm_ratios.begin(), shm_ratios.end()));
    }
    if (!shm_latency_excess.empty()) {
      const auto met = std::count_if(shm_latency_excess.begin(), shm_latency_excess.end(), [](double x) { return x <= 0; });
      std::printf("# shared memory, latency <= 1.3 x raw + 10 us at <= 128 tokens per rank: met at %lld of %zu sizes; "
                  "median excess %+.1f us, worst %+.1f us\n",
                  static_cast<long long>(met), shm_latency_excess.size(), median(shm_latency_excess),
                  *std::max_element(shm_latency_excess.begin(), shm_latency_excess.end()));
    }
    if (!latency_excess.empty()) {
      const auto met = std::count_if(latency_excess.begin(), latency_excess.end(), [](double x) { return x <= 0; });
      std::printf("# latency goal, ours <= 1.3 x raw + 10 us at <= 128 tokens per rank: met at %lld of %zu sizes; "
                  "median excess %+.1f us, worst %+.1f us\n",
                  static_cast<long long>(met), latency_excess.size(), median(latency_excess),
                  *std::max_element(latency_excess.begin(), latency_excess.end()));
    }
  }
  if (root && !o.json_path.empty()) {
    const nlohmann::json j = {{"tool", "shoal bench a2a"}, {"backend", g.backend()},   {"ranks", R},
                              {"hosts", shape.hosts},     {"max_ranks_per_host", shape.max_per_host},
                              {"min_ranks_per_host", shape.min_per_host},          {"experts", o.experts},
                              {"wrong", total_wrong},     {"ok", total_wrong == 0}, {"results", sizes}};
    std::ofstream out(o.json_path);
    out << j.dump(2) << "\n";
    if (!out) return IoError(o.json_path + ": cannot write the results");
    std::printf("# results in %s (%d hosts, %d-%d ranks per host)\n", o.json_path.c_str(), shape.hosts,
                shape.min_per_host, shape.max_per_host);
  }
  if (total_wrong != 0) return Internal(std::to_string(total_wrong) + " wrong elements");
  return Status::Ok();
}

Status RunA2a(const A2aOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(auto runtime, comm::MpiRuntime::Init(nullptr, nullptr));
  Status st = RunA2aInGroup(o);
  FinishGroupCommand(st, "shoal bench a2a");
  return st;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int* exit_code) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto opts = std::make_shared<A2aOptions>();
  CLI::App* a2a = bench->add_subcommand("a2a", "Expert exchange vs raw MPI_Alltoallv (run under mpirun -np N)");
  a2a->add_option("--hidden", opts->hidden, "Hidden sizes")->delimiter(',')->check(CLI::Range(int64_t{2}, int64_t{65536}));
  a2a->add_option("--topk", opts->top_k, "Experts per token")->delimiter(',')->check(CLI::Range(1, 64));
  a2a->add_option("--experts", opts->experts, "Routed experts")->check(CLI::Range(1, 4096));
  a2a->add_option("--min-tokens", opts->min_tokens, "Smallest tokens per rank")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  a2a->add_option("--max-tokens", opts->max_tokens, "Largest tokens per rank (doubling from the smallest)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  a2a->add_option("--warmup", opts->warmup, "Untimed iterations per size")->check(CLI::Range(0, 1000));
  a2a->add_option("--seconds", opts->seconds_per_size, "Target timed seconds per size")->check(CLI::Range(0.01, 60.0));
  a2a->add_option("--max-mib", opts->max_mib, "Skip sizes needing more buffer memory per rank")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 20));
  a2a->add_option("--json", opts->json_path, "Rank 0 writes every size and the job's hosts here (for shoal plan --calibrate)");
  a2a->add_option("--timeout-ms", opts->timeout_ms, "Deadline of every collective")
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  a2a->callback([opts, exit_code] {
    // Errors from inside the group were printed by FinishGroupCommand already.
    Status st = RunA2a(*opts);
    if (!st.ok() && !comm::MpiRuntime::WasInitialized()) {
      std::fprintf(stderr, "shoal bench a2a: error: %s\n", st.ToString().c_str());
    }
    if (!st.ok()) *exit_code = 1;
  });
  AddBenchServeCommand(*bench, exit_code);
  AddBenchBalanceCommand(*bench, exit_code);
}

}  // namespace shoal::cli
