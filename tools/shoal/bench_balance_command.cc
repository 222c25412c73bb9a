// `shoal bench balance`: what rebalancing buys on a skewed routing load. Run under mpirun -np N.
//
// Every rank routes its tokens through L MoE layers (dispatch, each local expert's SiLU-gated FFN on
// its rows in bf16, combine — the engine's path, worker/moe.cc, without attention), with top-k
// experts per token drawn from a skewed distribution: Zipf over the experts (a different order of
// hot experts in every layer), or a recorded GET /v1/expert_load (--load: each layer's measured
// shares). The same steps run under the start-up placement (Placement::Balanced) and under the
// planner's (comm/placement_planner.h) for R = 0, N/4, N/2, N and 2N redundant slots per layer (each
// rounded up to fill every rank equally, distinct values once), planned from a separate calibration sample of the same distribution — as the
// coordinator plans from a past window and serves the future. Reported per placement: the planner's
// predicted max/mean rank load, the measured max/mean of rows per rank (summed over steps and layers),
// and the group's step time (the slowest rank's, median over steps), with its speed-up over Balanced.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/expert_exchange.h"
#include "comm/expert_load.h"
#include "comm/mpi/mpi_group.h"
#include "comm/placement_planner.h"
#include "common/dtype.h"
#include "common/thread_pool.h"
#include "kernels/kernels.h"
#include "tools/shoal/commands.h"

namespace shoal::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct BalanceOptions {
  int experts = 64, top_k = 6, layers = 4;
  int64_t hidden = 1024, intermediate = 512, tokens = 256;
  double zipf = 1.0;
  std::string load_path;  // a saved GET /v1/expert_load (one group's form, or the whole answer)
  int steps = 12, warmup = 2, threads = 1;
  int64_t timeout_ms = 120000;
  std::string json_path;  // rank 0 writes the results here
};

// One layer's routing distribution over the experts (sums to 1).
using Distribution = std::vector<double>;

std::vector<Distribution> ZipfLayers(int L, int E, double s, uint64_t seed) {
  std::vector<Distribution> out;
  std::mt19937_64 rng(seed);
  for (int l = 0; l < L; ++l) {
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    Distribution p(E);
    for (int i = 0; i < E; ++i) p[order[i]] = 1.0 / std::pow(i + 1.0, s);
    const double sum = std::accumulate(p.begin(), p.end(), 0.0);
    for (double& x : p) x /= sum;
    out.push_back(std::move(p));
  }
  return out;
}

StatusOr<std::vector<Distribution>> RecordedLayers(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(in, nullptr, false);
  if (j.is_discarded()) return InvalidArgument(path + ": not JSON");
  // The whole GET /v1/expert_load answer: its first group.
  if (j.contains("groups") && j["groups"].is_object() && !j["groups"].empty()) j = j["groups"].begin().value();
  SHOAL_ASSIGN_OR_RETURN(comm::ExpertLoad load, comm::ExpertLoadFromJson(j));
  std::vector<Distribution> out;
  for (int l = 0; l < load.layers; ++l) {
    Distribution p(load.tokens.begin() + static_cast<ptrdiff_t>(l) * load.experts,
                   load.tokens.begin() + static_cast<ptrdiff_t>(l + 1) * load.experts);
    const double sum = std::accumulate(p.begin(), p.end(), 0.0);
    if (sum <= 0) continue;  // a dense layer
    for (double& x : p) x /= sum;
    out.push_back(std::move(p));
  }
  if (out.empty()) return InvalidArgument(path + ": no layer routed any tokens");
  return out;
}

// T tokens' top-k distinct experts drawn from p (without replacement, as a router's top-k is).
std::vector<int32_t> Route(const Distribution& p, int64_t T, int K, std::mt19937_64& rng) {
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  std::discrete_distribution<int> pick(p.begin(), p.end());
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K;) {
      const int32_t e = pick(rng);
      if (std::find(ids.begin() + t * K, ids.begin() + t * K + j, e) != ids.begin() + t * K + j) continue;
      ids[static_cast<size_t>(t * K + j++)] = e;
    }
  }
  return ids;
}

// bf16 weights for the experts a rank holds (distinct buffers, so caches see real traffic).
struct ExpertWeights {
  std::vector<std::vector<uint16_t>> storage;
  std::vector<std::array<kernels::Matrix, 3>> ffn;  // [E]: gate, up, down (empty when not held)
};

ExpertWeights MakeExperts(const std::vector<int>& held, int E, int64_t H, int64_t I) {
  ExpertWeights w;
  w.ffn.resize(static_cast<size_t>(E));
  for (int e : held) {
    std::array<kernels::Matrix, 3> m;
    for (int k = 0; k < 3; ++k) {
      std::vector<uint16_t> buf(static_cast<size_t>(H * I));
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = F32ToBf16(static_cast<float>((i * 2654435761u + e * 97 + k) % 1000) * 1e-5f - 5e-3f);
      m[k] = {DType::kBF16, buf.data(), k < 2 ? I : H, k < 2 ? H : I};
      w.storage.push_back(std::move(buf));
    }
    w.ffn[e] = m;
  }
  return w;
}

struct Measured {
  double step_ms = 0;        // the group's median step (its slowest rank)
  double rank_max_mean = 0;  // Σ over steps and layers of the most loaded rank's rows / Σ of the mean's
};

// Runs the timed steps under `layouts` (one per layer) and measures them.
StatusOr<Measured> RunPlacement(comm::Group& g, const BalanceOptions& o, const std::vector<Distribution>& dist,
                                const std::vector<std::shared_ptr<const comm::ExchangeLayout>>& layouts, int E,
                                ThreadPool& pool) {
  const int L = static_cast<int>(dist.size()), K = o.top_k, me = g.rank();
  const int64_t H = o.hidden, I = o.intermediate, T = o.tokens;
  std::vector<ExpertWeights> weights;
  for (int l = 0; l < L; ++l) weights.push_back(MakeExperts(layouts[l]->placement.local_experts(me), E, H, I));
  SHOAL_ASSIGN_OR_RETURN(comm::ExpertExchange ex, comm::ExpertExchange::Create(&g, &layouts[0]->placement, H, K));
  std::vector<float> x(static_cast<size_t>(T * H)), out(static_cast<size_t>(T * H)), scratch;
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) * 0.01f;
  const std::vector<float> topk_w(static_cast<size_t>(T * K), 1.0f / K);
  std::vector<kernels::MatMulJob> gate_up, down;
  std::vector<double> step_ms;
  double sum_max = 0, sum_mean = 0;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    // The same tokens under every placement: the routing depends on the step, the layer and the rank only.
    std::vector<std::vector<int32_t>> ids;
    for (int l = 0; l < L; ++l) {
      std::mt19937_64 rng(1000003ull * step + 7919ull * l + me);
      ids.push_back(Route(dist[l], T, K, rng));
    }
    SHOAL_RETURN_IF_ERROR(g.Barrier(Deadline::AfterMs(o.timeout_ms)));
    const auto t0 = Clock::now();
    std::vector<int64_t> rows(static_cast<size_t>(L));
    for (int l = 0; l < L; ++l) {
      SHOAL_RETURN_IF_ERROR(ex.Use(layouts[l].get()));
      SHOAL_RETURN_IF_ERROR(ex.Dispatch(x.data(), T, ids[l].data(), topk_w.data(), Deadline::AfterMs(o.timeout_ms)));
      const std::vector<int>& local = ex.local_experts();
      const auto offsets = ex.expert_offsets();
      rows[l] = ex.num_expert_rows();
      scratch.resize(static_cast<size_t>(2 * rows[l] * I));
      gate_up.clear();
      down.clear();
      for (size_t i = 0; i < local.size(); ++i) {
        const int64_t b = offsets[i], n = offsets[i + 1] - b;
        if (n == 0) continue;
        const auto& f = weights[l].ffn[local[i]];
        float* gbuf = scratch.data() + 2 * b * I;
        gate_up.push_back({ex.expert_rows() + b * H, n, &f[0], gbuf});
        gate_up.push_back({ex.expert_rows() + b * H, n, &f[1], gbuf + n * I});
        down.push_back({gbuf, n, &f[2], ex.expert_out() + b * H});
      }
      kernels::MatMulBatch(gate_up, pool);
      for (size_t j = 0; j < down.size(); ++j) kernels::SiluMul(gate_up[2 * j].y, gate_up[2 * j].y + down[j].m * I, down[j].m * I);
      kernels::MatMulBatch(down, pool);
      SHOAL_RETURN_IF_ERROR(ex.Combine(Deadline::AfterMs(o.timeout_ms)));
      ex.WeightedSum(out.data());
    }
    std::vector<int64_t> us = {std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()};
    SHOAL_RETURN_IF_ERROR(g.AllReduceMax(us, Deadline::AfterMs(o.timeout_ms)));
    std::vector<int64_t> most = rows, total = rows;
    SHOAL_RETURN_IF_ERROR(g.AllReduceMax(most, Deadline::AfterMs(o.timeout_ms)));
    SHOAL_RETURN_IF_ERROR(g.AllReduceSum(total, Deadline::AfterMs(o.timeout_ms)));
    if (step < o.warmup) continue;
    step_ms.push_back(static_cast<double>(us[0]) / 1e3);
    for (int l = 0; l < L; ++l) {
      sum_max += static_cast<double>(most[l]);
      sum_mean += static_cast<double>(total[l]) / g.size();
    }
  }
  std::sort(step_ms.begin(), step_ms.end());
  return Measured{step_ms[step_ms.size() / 2], sum_mean > 0 ? sum_max / sum_mean : 0};
}

Status RunBalanceInGroup(const BalanceOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(auto world, comm::MpiGroup::Create(MPI_COMM_WORLD));
  comm::Group& g = *world;
  const int N = g.size();
  const bool root = g.rank() == 0;
  std::vector<Distribution> dist;
  std::string source;
  if (!o.load_path.empty()) {
    SHOAL_ASSIGN_OR_RETURN(dist, RecordedLayers(o.load_path));
    source = "recorded " + o.load_path;
  } else {
    dist = ZipfLayers(o.layers, o.experts, o.zipf, 42);
    char buf[64];
    std::snprintf(buf, sizeof buf, "Zipf s=%.2f", o.zipf);
    source = buf;
  }
  const int E = static_cast<int>(dist[0].size()), L = static_cast<int>(dist.size());
  for (const Distribution& p : dist) {
    const auto used = std::count_if(p.begin(), p.end(), [](double x) { return x > 0; });
    if (o.top_k > used) {
      return InvalidArgument("--topk " + std::to_string(o.top_k) + ": a layer routes to only " + std::to_string(used) +
                             " experts");
    }
  }
  // The load the planner sees: a calibration sample (other draws than the timed steps), as a window.
  std::vector<std::vector<double>> calibration(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(E), 0.0));
  for (int l = 0; l < L; ++l) {
    std::mt19937_64 rng(0xC0FFEEull + l);
    for (int32_t e : Route(dist[l], o.tokens * N * 4, o.top_k, rng)) calibration[l][e] += 1;
  }
  ThreadPool pool(o.threads);
  if (root) {
    std::printf("# shoal bench balance: %d ranks, %s, %d experts, top-%d, %d MoE layers, hidden %lld, "
                "intermediate %lld, %lld tokens per rank, bf16, %d thread(s) per rank, median of %d steps\n",
                N, source.c_str(), E, o.top_k, L, static_cast<long long>(o.hidden), static_cast<long long>(o.intermediate),
                static_cast<long long>(o.tokens), o.threads, o.steps);
    std::printf("  %-10s %4s | %9s %9s | %9s %8s\n", "placement", "R", "predicted", "measured", "step ms", "speed-up");
  }
  // R = 0, N/4, N/2 (the issue's points), then N and 2N; each rounded up so every rank has as many
  // slots — (E + R) divisible by N, as the planner requires — and run once per distinct value.
  std::vector<int> redundant;
  for (int r : {0, N / 4, N / 2, N, 2 * N}) {
    while ((E + r) % N != 0) ++r;
    if (std::find(redundant.begin(), redundant.end(), r) == redundant.end()) redundant.push_back(r);
  }
  double balanced_ms = 0;
  nlohmann::json rows = nlohmann::json::array();
  for (int variant = -1; variant < static_cast<int>(redundant.size()); ++variant) {
    std::vector<std::shared_ptr<const comm::ExchangeLayout>> layouts;
    double predicted = 0, weight = 0;
    int R = 0;
    for (int l = 0; l < L; ++l) {
      std::optional<Placement> p;
      double max_mean = 0;
      if (variant < 0) {
        SHOAL_ASSIGN_OR_RETURN(Placement b, Placement::Balanced(E, N));
        comm::ExpertLoad one{0, 1, E, {}};
        for (double c : calibration[l]) one.tokens.push_back(static_cast<uint64_t>(c));
        std::vector<std::vector<int>> ranks;
        for (int r = 0; r < N; ++r) ranks.push_back(b.local_experts(r));
        max_mean = one.RankImbalance(ranks);
        p = std::move(b);
      } else {
        comm::PlacementRequest q;
        q.load = calibration[l];
        q.num_ranks = N;
        q.redundant = R = redundant[variant];
        SHOAL_ASSIGN_OR_RETURN(comm::PlacementPlan plan, comm::PlanPlacement(q));
        max_mean = plan.MaxOverMean();
        SHOAL_ASSIGN_OR_RETURN(Placement planned, plan.ToPlacement());
        p = std::move(planned);
      }
      const double w = std::accumulate(calibration[l].begin(), calibration[l].end(), 0.0);
      predicted += w * max_mean;
      weight += w;
      layouts.push_back(std::make_shared<const comm::ExchangeLayout>(std::move(*p)));
    }
    predicted /= weight;
    SHOAL_ASSIGN_OR_RETURN(Measured m, RunPlacement(g, o, dist, layouts, E, pool));
    if (variant < 0) balanced_ms = m.step_ms;
    const std::string name = variant < 0 ? "balanced" : "planned";
    if (root) {
      std::printf("  %-10s %4d | %9.3f %9.3f | %9.2f %7.2fx\n", name.c_str(), R, predicted, m.rank_max_mean, m.step_ms,
                  balanced_ms / m.step_ms);
      std::fflush(stdout);
    }
    rows.push_back({{"placement", name}, {"redundant", R}, {"predicted_max_mean", predicted},
                    {"measured_max_mean", m.rank_max_mean}, {"step_ms", m.step_ms}, {"speedup", balanced_ms / m.step_ms}});
  }
  const nlohmann::json j = {{"tool", "shoal bench balance"}, {"source", source}, {"ranks", N}, {"experts", E},
                            {"top_k", o.top_k}, {"layers", L}, {"tokens_per_rank", o.tokens}, {"results", rows}};
  if (root && !o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << j.dump(2) << "\n";
    if (!out) return IoError(o.json_path + ": cannot write the results");
  }
  return Status::Ok();
}

}  // namespace

void AddBenchBalanceCommand(CLI::App& bench, int* exit_code) {
  auto o = std::make_shared<BalanceOptions>();
  CLI::App* c = bench.add_subcommand(
      "balance", "Skewed routing under the start-up and the planner's placements (run under mpirun -np N)");
  c->add_option("--experts", o->experts, "Routed experts (Zipf load)")->check(CLI::Range(2, 4096));
  c->add_option("--topk", o->top_k, "Experts per token")->check(CLI::Range(1, 64));
  c->add_option("--layers", o->layers, "MoE layers (Zipf load)")->check(CLI::Range(1, 256));
  c->add_option("--hidden", o->hidden, "Hidden size")->check(CLI::Range(int64_t{8}, int64_t{65536}));
  c->add_option("--intermediate", o->intermediate, "Expert intermediate size")->check(CLI::Range(int64_t{8}, int64_t{65536}));
  c->add_option("--tokens", o->tokens, "Tokens per rank per step")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  c->add_option("--zipf", o->zipf, "Zipf exponent of the expert load (0: uniform)")->check(CLI::Range(0.0, 4.0));
  c->add_option("--load", o->load_path, "A saved GET /v1/expert_load to replay instead of Zipf");
  c->add_option("--steps", o->steps, "Timed steps per placement")->check(CLI::Range(1, 100000));
  c->add_option("--warmup", o->warmup, "Untimed steps per placement")->check(CLI::Range(0, 1000));
  c->add_option("--threads", o->threads, "Threads per rank")->check(CLI::Range(1, 1024));
  c->add_option("--json", o->json_path, "Rank 0 writes the results here");
  c->add_option("--timeout-ms", o->timeout_ms, "Deadline of every collective")->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  c->callback([o, exit_code] {
    StatusOr<std::unique_ptr<comm::MpiRuntime>> runtime = comm::MpiRuntime::Init(nullptr, nullptr);
    Status st = runtime.ok() ? RunBalanceInGroup(*o) : runtime.status();
    if (runtime.ok()) FinishGroupCommand(st, "shoal bench balance");
    if (!st.ok() && !comm::MpiRuntime::WasInitialized()) {
      std::fprintf(stderr, "shoal bench balance: error: %s\n", st.ToString().c_str());
    }
    if (!st.ok()) *exit_code = 1;
  });
}

}  // namespace shoal::cli
