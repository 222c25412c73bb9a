// What the JSON-schema constraint (grammar/token_constraint.h) costs per generated token on a real
// vocabulary: a forced tool call's text is tokenized and replayed token by token; before each one the
// mask is computed (and checked to allow that token), side by side with the naive mask (every token
// tried on a copy of the matcher) on a sample of the steps.
//
// usage: json_constraint_bench TOKENIZER_DIR   (bench/vocab_from_gguf.py makes one from llama.cpp's
//        vocabulary GGUFs: Qwen2's 151k tokens, Llama 3's 128k)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "grammar/json_matcher.h"
#include "grammar/json_schema.h"
#include "grammar/token_constraint.h"
#include "model/tokenizer.h"

namespace {

using namespace shoal;
using Clock = std::chrono::steady_clock;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Case {
  const char* name;
  const char* schema;
  const char* output;
};

const Case kCases[] = {
    {"named call",
     R"({"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},
        "days":{"type":"integer"},"notes":{"type":"string"}},"required":["location","unit"]})",
     R"({"location": "San Francisco, CA", "unit": "celsius", "days": 3, "notes": "The user is planning a weekend trip )"
     R"(and asked whether it will rain on Saturday afternoon; include hourly precipitation if available, and the )"
     R"(wind speed near the coast. They said \"no need for a long forecast\" — just the next three days."})"},
    {"required, two calls",
     R"({"type":"array","minItems":1,"items":{"anyOf":[
        {"type":"object","properties":{"name":{"type":"string","enum":["get_weather"]},"parameters":{"type":"object",
          "properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},
          "required":["location","unit"]}},"required":["name","parameters"]},
        {"type":"object","properties":{"name":{"type":"string","enum":["search"]},"parameters":{"type":"object",
          "properties":{"query":{"type":"string"},"max_results":{"type":"integer"}},"required":["query"]}},
          "required":["name","parameters"]}]}})",
     R"([{"name": "get_weather", "parameters": {"location": "Paris", "unit": "celsius"}}, )"
     R"({"name": "search", "parameters": {"query": "museums open on Monday in Paris", "max_results": 5}}])"},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR\n", argv[0]);
    return 2;
  }
  auto t0 = Clock::now();
  auto tok = Tokenizer::Load(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  auto t1 = Clock::now();
  auto vocab = grammar::TokenVocabulary::FromTokenizer(**tok);
  if (!vocab.ok()) {
    std::fprintf(stderr, "%s\n", vocab.status().ToString().c_str());
    return 1;
  }
  auto t2 = Clock::now();
  std::printf("json_constraint_bench: %s, %d tokens; tokenizer load %.0f ms, vocabulary bytes %.0f ms\n", argv[1],
              (*vocab)->size(), Us(t1 - t0) / 1e3, Us(t2 - t1) / 1e3);
  std::printf("%-22s %6s %10s %10s %10s %10s %12s %8s\n", "case", "tokens", "mean_us", "p50_us", "p90_us", "max_us",
              "naive_us", "speedup");
  bool ok = true;
  for (const Case& c : kCases) {
    auto g = grammar::CompileJsonSchema(c.schema, c.name);
    auto ids = (*tok)->Encode(c.output, /*add_special_tokens=*/false);
    if (!g.ok() || !ids.ok()) {
      std::fprintf(stderr, "%s: %s %s\n", c.name, g.status().ToString().c_str(), ids.status().ToString().c_str());
      return 1;
    }
    grammar::TokenConstraint constraint(*g, *vocab);
    grammar::JsonMatcher shadow(*g);
    std::vector<uint8_t> allowed;
    std::vector<double> times, fast_sampled, naive_sampled;
    const int32_t stop = (*vocab)->size();  // a stop id past the tokenizer's tokens
    for (size_t i = 0; i <= ids->size(); ++i) {
      const auto a = Clock::now();
      constraint.Allowed(std::vector<int32_t>{stop}, (*vocab)->size() + 1, &allowed);
      const double us = Us(Clock::now() - a);
      times.push_back(us);
      if (i == ids->size()) {
        ok = ok && allowed[static_cast<size_t>(stop)] == 1;  // whole: the stop id is allowed
        break;
      }
      const int32_t t = (*ids)[i];
      ok = ok && allowed[static_cast<size_t>(t)] == 1 && allowed[static_cast<size_t>(stop)] == 0;
      if (i % 8 == 0) {  // the naive mask: every token tried on a copy of the matcher
        const auto b = Clock::now();
        size_t n = 0;
        for (int32_t v = 0; v < (*vocab)->size(); ++v) {
          if ((*vocab)->bytes(v).empty()) continue;
          grammar::JsonMatcher copy = shadow;
          n += copy.Feed((*vocab)->bytes(v)) ? 1 : 0;
        }
        naive_sampled.push_back(Us(Clock::now() - b));
        fast_sampled.push_back(us);
        ok = ok && n == static_cast<size_t>(std::count(allowed.begin(), allowed.end() - 1, 1));
      }
      ok = ok && constraint.Accept(t) && shadow.Feed((*vocab)->bytes(t));
    }
    double mean = 0, naive = 0, fast = 0;
    for (double x : times) mean += x / static_cast<double>(times.size());
    for (size_t k = 0; k < naive_sampled.size(); ++k) naive += naive_sampled[k], fast += fast_sampled[k];
    std::printf("%-22s %6zu %10.1f %10.1f %10.1f %10.1f %12.1f %7.1fx\n", c.name, ids->size(), mean,
                Percentile(times, 0.5), Percentile(times, 0.9), Percentile(times, 1.0),
                naive / static_cast<double>(naive_sampled.size()), naive / fast);
  }
  std::printf("%s\n", ok ? "OK: every replayed token was allowed, and the mask equals the naive one" : "FAILED");
  return ok ? 0 : 1;
}
