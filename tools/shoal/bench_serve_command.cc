// `shoal bench serve`: a load generator for any OpenAI-compatible endpoint, reporting vLLM's serving
// metrics (TTFT, TPOT, ITL, E2E; throughput; goodput under SLOs). One run at one offered load, or a
// sweep over several that also draws latency and goodput against load as an SVG.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "loadgen/metrics.h"
#include "loadgen/runner.h"
#include "model/tokenizer.h"
#include "tools/shoal/commands.h"

namespace shoal::cli {

namespace {

struct BenchServeOptions {
  std::string url = "http://127.0.0.1:8000";
  std::string endpoint = "completions";
  std::string model;              // --model: the checkpoint directory (its tokenizer), as in `vllm bench serve`
  std::string served_model_name;  // the model id sent; empty: none (the server's only model)
  std::string api_key;
  std::string dataset;  // ShareGPT JSON; empty = random token ids
  std::string tokenizer;
  int vocab = 0;
  int max_len = 2048;
  int num_prompts = 100;
  int input_len = 128, output_len = 128;
  double range_ratio = 0.0;
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1.0;
  int max_concurrency = 0;
  uint64_t seed = 0;
  std::vector<std::string> slo;
  std::vector<double> sweep;
  std::string save_json, svg;
  bool save_detailed = false;  // per-request records in the JSON
  bool quiet = false;
  int warmup = 2;
};

StatusOr<std::pair<std::string, int>> ParseUrl(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  else if (rest.find("://") != std::string::npos) return InvalidArgument("--url: only http:// is supported, got " + url);
  rest = rest.substr(0, rest.find('/'));
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return std::make_pair(rest, 80);
  const std::string port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    return InvalidArgument("--url: bad port in " + url);
  }
  return std::make_pair(rest.substr(0, colon), std::stoi(port));
}

StatusOr<loadgen::Slo> ParseSlo(const std::vector<std::string>& items) {
  loadgen::Slo slo;
  for (const std::string& it : items) {
    const size_t colon = it.find(':');
    double v = -1;
    if (colon != std::string::npos) {
      try {
        v = std::stod(it.substr(colon + 1));
      } catch (...) {
        v = -1;
      }
    }
    const std::string key = it.substr(0, colon);
    if (!(v > 0) || (key != "ttft" && key != "tpot" && key != "e2e")) {
      return InvalidArgument("--slo: expected ttft:MS, tpot:MS or e2e:MS, got '" + it + "'");
    }
    (key == "ttft" ? slo.ttft_ms : key == "tpot" ? slo.tpot_ms : slo.e2e_ms) = v;
  }
  return slo;
}

int64_t CountTokens(const std::string& text, void* tok) {
  auto ids = static_cast<const Tokenizer*>(tok)->Encode(text, /*add_special_tokens=*/false);
  return ids.ok() ? static_cast<int64_t>(ids->size()) : static_cast<int64_t>(text.size() / 4);
}

Status RunBenchServe(const BenchServeOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(auto hp, ParseUrl(o.url));
  SHOAL_ASSIGN_OR_RETURN(loadgen::Slo slo, ParseSlo(o.slo));
  if (o.endpoint != "completions" && o.endpoint != "chat") return InvalidArgument("--endpoint: completions or chat");
  std::unique_ptr<Tokenizer> tok;
  if (const std::string dir = o.tokenizer.empty() ? o.model : o.tokenizer; !dir.empty()) {
    SHOAL_ASSIGN_OR_RETURN(tok, Tokenizer::Load(dir));
  }
  std::vector<loadgen::WorkloadRequest> work;
  if (!o.dataset.empty()) {
    SHOAL_ASSIGN_OR_RETURN(work, loadgen::ShareGptWorkload(o.dataset, o.num_prompts, o.seed, o.max_len,
                                                           tok ? CountTokens : nullptr,
                                                           tok.get()));
  } else {
    if (o.endpoint == "chat") return InvalidArgument("--endpoint chat needs text prompts: give --dataset");
    const int vocab = o.vocab > 0 ? o.vocab : tok ? tok->vocab_size() : 0;
    if (vocab <= 0) return InvalidArgument("random prompts need the vocabulary size: give --model DIR (or --tokenizer DIR) or --vocab N");
    // Ids above the special tokens at the start of most vocabularies, as vLLM's random dataset does.
    work = loadgen::RandomWorkload(o.num_prompts, o.input_len, o.output_len, o.range_ratio, vocab, std::min(vocab / 10, 100),
                                   o.seed);
  }
  loadgen::LoadSpec spec;
  spec.host = hp.first;
  spec.port = hp.second;
  spec.chat = o.endpoint == "chat";
  spec.model = o.served_model_name;
  spec.api_key = o.api_key;
  if (spec.api_key.empty()) {
    if (const char* k = std::getenv("OPENAI_API_KEY")) spec.api_key = k;
  }
  spec.burstiness = o.burstiness;
  spec.max_concurrency = o.max_concurrency;
  spec.seed = o.seed;
  spec.progress = !o.quiet;

  if (o.warmup > 0) {
    // Not measured: the first requests pay for first touches (memory-mapped weights, caches); vLLM
    // likewise sends a test request before it starts the clock.
    loadgen::LoadSpec warm = spec;
    warm.max_concurrency = 1;
    warm.progress = false;
    std::vector<loadgen::WorkloadRequest> w(work.begin(), work.begin() + std::min<size_t>(work.size(), o.warmup));
    double ignored = 0;
    for (const auto& out : loadgen::RunLoad(warm, w, &ignored)) {
      if (!out.ok) return Unavailable("the warm-up request failed: " + out.error);
    }
  }
  std::vector<double> rates = o.sweep.empty() ? std::vector<double>{o.request_rate} : o.sweep;
  std::vector<loadgen::Summary> results;
  nlohmann::ordered_json runs = nlohmann::ordered_json::array();
  for (double rate : rates) {
    spec.request_rate = rate;
    char rate_s[32];
    std::snprintf(rate_s, sizeof(rate_s), "%g", rate);
    std::fprintf(stderr, "shoal bench serve: %zu requests to %s, offered load %s req/s, burstiness %.2f%s\n", work.size(),
                 o.url.c_str(), std::isfinite(rate) ? rate_s : "inf", o.burstiness,
                 o.max_concurrency > 0 ? (", max concurrency " + std::to_string(o.max_concurrency)).c_str() : "");
    double duration = 0;
    std::vector<loadgen::RequestOutcome> outcomes = loadgen::RunLoad(spec, work, &duration);
    loadgen::Summary s = loadgen::Summarize(outcomes, duration, slo);
    std::printf("%s", loadgen::FormatSummary(s).c_str());
    std::fflush(stdout);
    for (const auto& out : outcomes) {
      if (!out.ok) {
        std::fprintf(stderr, "shoal bench serve: first failure: %s\n", out.error.c_str());
        break;
      }
    }
    nlohmann::ordered_json j = loadgen::ToJson(s);
    j["offered_request_rate"] = std::isfinite(rate) ? nlohmann::ordered_json(rate) : nlohmann::ordered_json("inf");
    if (o.save_detailed) {
      // One record per request, in arrival order: what a tail is made of (which requests, when).
      nlohmann::ordered_json reqs = nlohmann::ordered_json::array();
      for (const auto& out : outcomes) {
        double itl_max = 0;
        for (double x : out.itl) itl_max = std::max(itl_max, x);
        nlohmann::ordered_json r = {{"start_s", out.start},       {"ok", out.ok},
                                    {"prompt_tokens", out.prompt_tokens}, {"output_tokens", out.output_tokens},
                                    {"ttft_ms", out.ttft * 1e3},  {"e2e_ms", out.e2e * 1e3},
                                    {"itl_max_ms", itl_max * 1e3}};
        if (!out.ok) r["error"] = out.error;
        reqs.push_back(std::move(r));
      }
      j["requests"] = std::move(reqs);
    }
    runs.push_back(j);
    results.push_back(s);
  }
  if (!o.save_json.empty()) {
    nlohmann::ordered_json doc = {{"url", o.url},
                                  {"endpoint", o.endpoint},
                                  {"model", o.served_model_name},
                                  {"dataset", o.dataset.empty() ? "random" : o.dataset},
                                  {"num_prompts", work.size()},
                                  {"burstiness", o.burstiness},
                                  {"max_concurrency", o.max_concurrency},
                                  {"slo", {{"ttft_ms", slo.ttft_ms}, {"tpot_ms", slo.tpot_ms}, {"e2e_ms", slo.e2e_ms}}},
                                  {"runs", runs}};
    std::ofstream f(o.save_json);
    f << doc.dump(2) << "\n";
    if (!f) return IoError(o.save_json + ": write failed");
  }
  if (!o.svg.empty()) {
    if (o.sweep.empty()) return InvalidArgument("--svg draws a sweep: give --sweep RATE,RATE,...");
    std::ofstream f(o.svg);
    f << loadgen::SweepSvg(rates, results, slo);
    if (!f) return IoError(o.svg + ": write failed");
  }
  for (const auto& s : results) {
    if (s.completed == 0) return Unavailable("no request succeeded (see the first failure above)");
  }
  return Status::Ok();
}

}  // namespace

void AddBenchServeCommand(CLI::App& bench, int* exit_code) {
  auto o = std::make_shared<BenchServeOptions>();
  CLI::App* cmd = bench.add_subcommand("serve", "Load-test an OpenAI-compatible server (TTFT, TPOT, ITL, E2E, goodput)");
  cmd->add_option("--url", o->url, "Server base URL (default http://127.0.0.1:8000)");
  cmd->add_option("--endpoint", o->endpoint, "completions (default) or chat");
  cmd->add_option("--model", o->model, "Checkpoint directory served: its tokenizer gives the vocabulary and token counts");
  cmd->add_option("--served-model-name", o->served_model_name, "Model id to send (default: none, the server's only model)");
  cmd->add_option("--api-key", o->api_key, "Bearer key (default: $OPENAI_API_KEY)");
  cmd->add_option("--dataset", o->dataset, "ShareGPT-format JSON of conversations (default: random token ids)");
  cmd->add_option("--tokenizer", o->tokenizer, "Directory with tokenizer.json when not --model's");
  cmd->add_option("--vocab", o->vocab, "Vocabulary size for random prompts (default: the tokenizer's)")->check(CLI::Range(2, 1 << 24));
  cmd->add_option("--max-len", o->max_len, "Dataset prompts: leave out conversations longer than this (tokens)")
      ->check(CLI::Range(8, 1 << 24));
  cmd->add_option("--num-prompts", o->num_prompts, "Requests per run")->check(CLI::Range(1, 10000000));
  cmd->add_option("--random-input-len", o->input_len, "Random prompts: input tokens")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--random-output-len", o->output_len, "Random prompts: output tokens")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--random-range-ratio", o->range_ratio, "Random lengths vary by ±this fraction")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--request-rate", o->request_rate, "Offered load, requests/s (default inf: all at once)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--burstiness", o->burstiness, "Gamma shape of arrivals: 1 = Poisson")->check(CLI::PositiveNumber);
  cmd->add_option("--max-concurrency", o->max_concurrency, "Requests in flight at most (default: no cap)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--seed", o->seed, "Seed for prompts and arrivals");
  cmd->add_option("--slo", o->slo, "Goodput SLOs: ttft:MS tpot:MS e2e:MS");
  cmd->add_option("--sweep", o->sweep, "Run once per offered load (req/s), e.g. 1,2,4,8")->delimiter(',')->check(CLI::PositiveNumber);
  cmd->add_option("--save-json", o->save_json, "Write the results (every run) as JSON here");
  cmd->add_flag("--save-detailed", o->save_detailed,
                "With --save-json: also one record per request (start, tokens, TTFT, E2E, longest ITL)")
      ->needs("--save-json");
  cmd->add_option("--svg", o->svg, "With --sweep: draw latency percentiles and goodput vs load here");
  cmd->add_flag("--quiet", o->quiet, "No progress bar");
  cmd->add_option("--warmup", o->warmup, "Requests sent one at a time, unmeasured, before the first run (default 2)")
      ->check(CLI::Range(0, 1000));
  cmd->callback([o, exit_code] {
    Status st = RunBenchServe(*o);
    if (!st.ok()) {
      std::fprintf(stderr, "shoal bench serve: error: %s\n", st.ToString().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace shoal::cli
