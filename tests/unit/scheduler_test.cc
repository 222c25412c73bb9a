// Continuous batching (worker/scheduler.h) against transformers' greedy tokens: requests joining at
// different steps, chunked prefill, preemption when KV blocks run out, cancellation, bad requests.
#include "worker/scheduler.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"

namespace shoal {
namespace {

using testing::LoadFixture;

std::unique_ptr<Engine> MakeSmallEngine(const std::string& dir, int64_t kv_blocks, int max_step_tokens, int max_seqs = 64) {
  auto config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  auto weights = LoadModelWeights(*config, dir);
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();
  EngineConfig cfg;
  cfg.threads = 2;
  cfg.kv_block_size = 4;
  cfg.kv_cache_blocks = kv_blocks;
  cfg.max_step_tokens = max_step_tokens;
  cfg.max_num_seqs = max_seqs;
  auto e = Engine::Create(*config, std::move(weights).value(), cfg);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

struct Outcome {
  std::vector<int32_t> tokens;
  control::FinishReason finish = control::FinishReason::kNone;
  std::string error;
};

// Steps until idle, submitting request i before step i * stagger; returns every request's outcome.
std::map<uint64_t, Outcome> RunAll(Scheduler& s, std::vector<ScheduledRequest> reqs, int stagger) {
  std::map<uint64_t, Outcome> out;
  std::vector<control::TokenEvent> events;
  size_t next = 0;
  for (int step = 0; step < 100000; ++step) {
    while (next < reqs.size() && static_cast<int>(next) * stagger <= step) {
      Status st = s.Submit(reqs[next++]);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    if (!s.HasWork() && next == reqs.size()) break;
    events.clear();
    Status st = s.Step(&events);
    EXPECT_TRUE(st.ok()) << st.ToString();
    for (const auto& e : events) {
      Outcome& o = out[e.request];
      EXPECT_EQ(o.finish, control::FinishReason::kNone) << "event after the end of request " << e.request;
      if (e.token >= 0) o.tokens.push_back(e.token);
      o.finish = e.finish;
      o.error = e.error;
    }
  }
  return out;
}

std::vector<ScheduledRequest> FixtureRequests(const testing::Fixture& f, int copies) {
  std::vector<ScheduledRequest> reqs;
  for (int c = 0; c < copies; ++c) {
    for (size_t i = 0; i < f.prompts.size(); ++i) {
      ScheduledRequest r;
      r.id = reqs.size() + 1;
      r.prompt = f.prompts[i].prompt;
      r.max_tokens = static_cast<int>(f.prompts[i].greedy.size());
      reqs.push_back(r);
    }
  }
  return reqs;
}

void ExpectGreedy(const testing::Fixture& f, const std::map<uint64_t, Outcome>& out, size_t n) {
  ASSERT_EQ(out.size(), n);
  for (const auto& [id, o] : out) {
    const auto& want = f.prompts[(id - 1) % f.prompts.size()].greedy;
    EXPECT_EQ(o.tokens, want) << f.name << " request " << id;
    EXPECT_EQ(o.finish, control::FinishReason::kLength) << o.error;
  }
}

TEST(Scheduler, RequestsJoiningBetweenStepsGetTransformersGreedyTokens) {
  for (const std::string& name : testing::ListFixtures()) {
    SCOPED_TRACE(name);
    const auto f = LoadFixture(name);
    auto engine = MakeSmallEngine(f.dir, 4096, /*max_step_tokens=*/7);  // 7: prompts prefill in chunks
    Scheduler s(*engine);
    auto out = RunAll(s, FixtureRequests(f, 2), /*stagger=*/2);
    ExpectGreedy(f, out, 2 * f.prompts.size());
    EXPECT_EQ(engine->kv_cache().free_blocks(), engine->kv_cache().num_blocks());
    EXPECT_EQ(s.stats().preemptions, 0u);
    // The /metrics histograms: one iteration per step (each at most the 7-token budget), and every
    // request's queue, prefill and decode time once.
    auto total = [](const control::HistogramTotals& h) {
      uint64_t n = 0;
      for (uint64_t c : h.counts) n += c;
      return n;
    };
    const SchedulerStats& st = s.stats();
    EXPECT_EQ(total(st.iteration_tokens), st.steps);
    EXPECT_LE(st.iteration_tokens.sum, 7.0 * static_cast<double>(st.steps));
    EXPECT_EQ(st.iteration_tokens.counts[0] + st.iteration_tokens.counts[1], st.steps) << "every step ≤ 8 tokens";
    for (const auto* h : {&st.queue_seconds, &st.prefill_seconds, &st.decode_seconds}) {
      EXPECT_EQ(total(*h), 2 * f.prompts.size());
      EXPECT_GE(h->sum, 0.0);
    }
  }
}

TEST(Scheduler, PreemptsWhenKvRunsOutAndStillMatches) {
  const auto f = LoadFixture("qwen3-moe-f32");
  size_t longest = 0;
  for (const auto& p : f.prompts) longest = std::max(longest, p.prompt.size() + p.greedy.size());
  // Room for about two sequences at a time, while eight run: requests must be preempted and recomputed.
  const int64_t blocks = static_cast<int64_t>(2 * ((longest + 3) / 4) + 1);
  auto engine = MakeSmallEngine(f.dir, blocks, /*max_step_tokens=*/64);
  Scheduler s(*engine);
  auto out = RunAll(s, FixtureRequests(f, 8 / static_cast<int>(f.prompts.size()) + 1), /*stagger=*/0);
  ExpectGreedy(f, out, out.size());
  EXPECT_GT(s.stats().preemptions, 0u);
  // Preempting frees blocks for the request asking: only as many requests are preempted as needed,
  // so each request is preempted only a few times, not at every block boundary of an older one.
  EXPECT_LE(s.stats().preemptions, 2 * out.size()) << s.stats().preemptions << " preemptions";
  EXPECT_EQ(engine->kv_cache().free_blocks(), blocks);
}

TEST(Scheduler, MaxNumSeqsQueuesTheRest) {
  const auto f = LoadFixture("mixtral-top1-f32");
  auto engine = MakeSmallEngine(f.dir, 4096, 64, /*max_seqs=*/2);
  Scheduler s(*engine);
  auto reqs = FixtureRequests(f, 3);
  for (auto& r : reqs) ASSERT_TRUE(s.Submit(r).ok());
  std::vector<control::TokenEvent> events;
  ASSERT_TRUE(s.Step(&events).ok());
  EXPECT_EQ(s.running(), 2u);
  EXPECT_EQ(s.waiting(), reqs.size() - 2);
  // The rest still completes with the right tokens.
  std::map<uint64_t, Outcome> out;
  while (s.HasWork()) ASSERT_TRUE(s.Step(&events).ok());
  for (const auto& e : events) {
    if (e.token >= 0) out[e.request].tokens.push_back(e.token);
    out[e.request].finish = e.finish;
  }
  ExpectGreedy(f, out, reqs.size());
}

TEST(Scheduler, CancelFreesKvAtOnce) {
  const auto f = LoadFixture("qwen3-moe-f32");
  auto engine = MakeSmallEngine(f.dir, 4096, 64);
  Scheduler s(*engine);
  auto reqs = FixtureRequests(f, 1);
  reqs[0].max_tokens = 50;
  ASSERT_TRUE(s.Submit(reqs[0]).ok());
  std::vector<control::TokenEvent> events;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.Step(&events).ok());
  EXPECT_LT(engine->kv_cache().free_blocks(), engine->kv_cache().num_blocks());
  EXPECT_TRUE(s.Cancel(reqs[0].id));
  EXPECT_EQ(engine->kv_cache().free_blocks(), engine->kv_cache().num_blocks());
  EXPECT_FALSE(s.HasWork());
  EXPECT_FALSE(s.Cancel(reqs[0].id));
}

TEST(Scheduler, StopIdsAndSeededSampling) {
  const auto f = LoadFixture("qwen3-moe-f32");
  auto engine = MakeSmallEngine(f.dir, 4096, 64);
  Scheduler s(*engine);
  ScheduledRequest r;
  r.id = 7;
  r.prompt = f.prompts[0].prompt;
  r.max_tokens = 20;
  r.stop_ids = {f.prompts[0].greedy[2]};
  auto out = RunAll(s, {r}, 0);
  ASSERT_EQ(out[7].finish, control::FinishReason::kStop);
  EXPECT_EQ(out[7].tokens.back(), f.prompts[0].greedy[2]);
  EXPECT_LE(out[7].tokens.size(), 3u);

  // The same seed gives the same tokens whatever else is in the batch; penalties change the choice.
  ScheduledRequest a;
  a.prompt = f.prompts[1].prompt;
  a.max_tokens = 12;
  a.sampling.temperature = 0.9f;
  a.sampling.top_p = 0.9f;
  a.sampling.seed = 1234;
  std::vector<ScheduledRequest> alone = {a}, crowd;
  alone[0].id = 1;
  for (int i = 0; i < 5; ++i) {
    crowd.push_back(a);
    crowd.back().id = 10 + i;
    crowd.back().sampling.seed = i == 2 ? 1234 : 99 + i;
  }
  Scheduler s2(*engine);
  auto o1 = RunAll(s2, alone, 0);
  auto o2 = RunAll(s2, crowd, 1);
  EXPECT_EQ(o1[1].tokens, o2[12].tokens);
  ScheduledRequest p = f.prompts.size() > 0 ? alone[0] : a;
  p.id = 50;
  p.sampling.temperature = 0;
  p.sampling.frequency_penalty = 2.0f;
  p.sampling.presence_penalty = 2.0f;
  p.max_tokens = 16;
  auto o3 = RunAll(s2, {p}, 0);
  std::map<int32_t, int> counts;
  for (int32_t t : o3[50].tokens) ++counts[t];
  int max_repeat = 0;
  for (auto& [t, n] : counts) max_repeat = std::max(max_repeat, n);
  EXPECT_LE(max_repeat, 4) << "penalties should discourage repeating a token";
}

TEST(Scheduler, RejectsRequestsThatCouldNeverRun) {
  const auto f = LoadFixture("qwen3-moe-f32");
  auto engine = MakeSmallEngine(f.dir, 8, 64);  // 8 blocks of 4 tokens
  Scheduler s(*engine);
  ScheduledRequest r;
  r.id = 1;
  r.prompt = {1, 2, 3};
  r.max_tokens = 100;
  Status st = s.Submit(r);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(testing::MessageHas(st, "request 1")) << st.ToString();
  r.max_tokens = 1000;
  EXPECT_TRUE(testing::MessageHas(s.Submit(r), "context")) << s.Submit(r).ToString();
  r.max_tokens = 4;
  r.prompt = {1, 100000};
  EXPECT_TRUE(testing::MessageHas(s.Submit(r), "outside the vocabulary"));
  r.prompt = {};
  EXPECT_TRUE(testing::MessageHas(s.Submit(r), "empty prompt"));
  r.prompt = {1, 2};
  EXPECT_TRUE(s.Submit(r).ok());
  EXPECT_TRUE(testing::MessageHas(s.Submit(r), "already submitted"));
}

// A request resumed elsewhere after its group failed (prompt + its first k tokens, resumed_output k)
// continues exactly as the undisturbed run: seeded sampling is drawn per position and the penalties
// count the resumed tokens as output.
TEST(Scheduler, AResumedRequestContinuesTheUndisturbedTokens) {
  const auto f = LoadFixture("qwen3-moe-f32");
  ScheduledRequest r;
  r.id = 1;
  r.prompt = f.prompts[0].prompt;
  r.max_tokens = 12;
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.95f;
  r.sampling.presence_penalty = 0.7f;
  r.sampling.frequency_penalty = 0.3f;
  r.sampling.seed = 4242;
  auto engine = MakeSmallEngine(f.dir, 256, 64);
  Scheduler whole(*engine);
  const std::vector<int32_t> want = RunAll(whole, {r}, 0).at(1).tokens;
  ASSERT_EQ(want.size(), 12u);
  for (int k : {1, 5, 11}) {
    SCOPED_TRACE(k);
    ScheduledRequest resumed = r;
    resumed.id = 2;
    resumed.prompt.insert(resumed.prompt.end(), want.begin(), want.begin() + k);
    resumed.resumed_output = k;
    Scheduler other(*engine);
    const Outcome got = RunAll(other, {resumed}, 0).at(2);
    EXPECT_EQ(got.finish, control::FinishReason::kLength);
    EXPECT_EQ(got.tokens, std::vector<int32_t>(want.begin() + k, want.end()));
  }
  // Nothing left to generate, or no prompt of its own: refused.
  ScheduledRequest bad = r;
  bad.id = 3;
  bad.resumed_output = static_cast<int64_t>(bad.prompt.size());
  Scheduler s(*engine);
  EXPECT_EQ(s.Submit(bad).code(), StatusCode::kInvalidArgument);
  bad.prompt.insert(bad.prompt.end(), want.begin(), want.end());
  bad.resumed_output = 12;
  EXPECT_EQ(s.Submit(bad).code(), StatusCode::kInvalidArgument);
}


// The sampling knobs applied on the worker, exactly: logit_bias, min_tokens, repetition_penalty
// (HF's formula over prompt and output) — each checked against the engine's own logits with the
// formula applied by hand.
TEST(SchedulerSampling, LogitBiasMinTokensAndRepetitionPenaltyAreExact) {
  const std::string dir = testing::FixturesDir() + "/qwen3-moe-f32";
  const testing::Fixture f = LoadFixture("qwen3-moe-f32");
  const std::vector<int32_t>& prompt = f.prompts[0].prompt;
  const int32_t greedy0 = f.prompts[0].greedy[0];
  // The prefill logits of the prompt's last position, from a fresh engine.
  std::vector<float> logits;
  {
    auto e = MakeSmallEngine(dir, 64, 64);
    auto seq = e->NewSequence();
    ASSERT_TRUE(seq.ok());
    std::vector<ForwardOutput> out;
    ASSERT_TRUE(e->Forward({{*seq, prompt, false}}, &out).ok());
    logits = out[0].logits;
  }
  auto first_token = [&](const ScheduledRequest& r) {
    auto e = MakeSmallEngine(dir, 64, 64);
    Scheduler s(*e);
    auto out = RunAll(s, {r}, 0);
    return out.at(r.id).tokens.at(0);
  };
  ScheduledRequest base;
  base.id = 1;
  base.prompt = prompt;
  base.max_tokens = 1;
  EXPECT_EQ(first_token(base), greedy0);
  // logit_bias: +100 on a token makes it the greedy choice; -100 on the greedy one gives the runner-up.
  ScheduledRequest r = base;
  r.bias_ids = {7};
  r.bias_values = {100.0f};
  EXPECT_EQ(first_token(r), 7);
  r.bias_ids = {greedy0};
  r.bias_values = {-100.0f};
  std::vector<float> l = logits;
  l[greedy0] -= 100.0f;
  EXPECT_EQ(first_token(r), kernels::ArgMax(l.data(), static_cast<int>(l.size())));
  // min_tokens: the greedy token as a stop id ends the request at once, unless min_tokens holds it off.
  r = base;
  r.max_tokens = 3;
  r.stop_ids = {greedy0};
  {
    auto e = MakeSmallEngine(dir, 64, 64);
    Scheduler s(*e);
    auto out = RunAll(s, {r}, 0);
    EXPECT_EQ(out.at(1).tokens, std::vector<int32_t>{greedy0});
    EXPECT_EQ(out.at(1).finish, control::FinishReason::kStop);
  }
  r.sampling.min_tokens = 1;
  l = logits;
  l[greedy0] = -INFINITY;
  EXPECT_EQ(first_token(r), kernels::ArgMax(l.data(), static_cast<int>(l.size())));
  // repetition_penalty 1.7: every prompt token's logit divided (positive) or multiplied (negative).
  r = base;
  r.sampling.repetition_penalty = 1.7f;
  l = logits;
  std::vector<bool> seen(l.size(), false);
  for (int32_t t : prompt) seen[t] = true;
  for (size_t t = 0; t < l.size(); ++t) {
    if (seen[t]) l[t] = l[t] > 0 ? l[t] / 1.7f : l[t] * 1.7f;
  }
  EXPECT_EQ(first_token(r), kernels::ArgMax(l.data(), static_cast<int>(l.size())));
  // A bias for a token outside the vocabulary is refused at submission.
  r = base;
  r.bias_ids = {1 << 20};
  r.bias_values = {1.0f};
  auto e = MakeSmallEngine(dir, 64, 64);
  Scheduler s(*e);
  EXPECT_EQ(s.Submit(r).code(), StatusCode::kInvalidArgument);
}


// Steps until every request ended, collecting the events.
void RunToEnd(Scheduler& s, std::vector<control::TokenEvent>* all) {
  std::vector<control::TokenEvent> events;
  while (s.HasWork()) {
    events.clear();
    ASSERT_TRUE(s.Step(&events).ok());
    all->insert(all->end(), events.begin(), events.end());
  }
}

// Logprobs: the log-softmax of the logits the sampler drew from (greedy: temperature 1), against the
// fixture's transformers logits, for the sampled token and the top alternatives, at every decode step.
TEST(SchedulerSampling, LogprobsMatchTransformersLogSoftmax) {
  const std::string dir = testing::FixturesDir() + "/qwen3-moe-f32";
  const testing::Fixture f = LoadFixture("qwen3-moe-f32");
  auto e = MakeSmallEngine(dir, 64, 64);
  Scheduler s(*e);
  ScheduledRequest r;
  r.id = 1;
  r.prompt = f.prompts[0].prompt;
  r.max_tokens = static_cast<int>(f.prompts[0].greedy.size());
  r.logprobs = 3;
  ASSERT_TRUE(s.Submit(r).ok());
  std::vector<control::TokenEvent> all;
  ASSERT_NO_FATAL_FAILURE(RunToEnd(s, &all));
  const int V = e->config().vocab_size;
  const std::vector<float> prefill = f.Tensor("prompt0.prefill_logits");
  const std::vector<float> decode = f.Tensor("prompt0.decode_logits");
  ASSERT_EQ(all.size(), f.prompts[0].greedy.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const float* ref = i == 0 ? prefill.data() + prefill.size() - V : decode.data() + (i - 1) * V;
    double mx = ref[0], z = 0;
    for (int t = 0; t < V; ++t) mx = std::max<double>(mx, ref[t]);
    for (int t = 0; t < V; ++t) z += std::exp(ref[t] - mx);
    auto lp = [&](int32_t t) { return ref[t] - mx - std::log(z); };
    const control::TokenEvent& ev = all[i];
    ASSERT_TRUE(ev.has_logprob);
    EXPECT_EQ(ev.token, f.prompts[0].greedy[i]);
    EXPECT_NEAR(ev.logprob, lp(ev.token), 2e-4) << "step " << i;
    ASSERT_EQ(ev.top_ids.size(), 3u);
    EXPECT_EQ(ev.top_ids[0], ev.token) << "greedy: the sampled token is the most likely";
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_NEAR(ev.top_logprobs[k], lp(ev.top_ids[k]), 2e-4);
      if (k > 0) {
        EXPECT_GE(ev.top_logprobs[k - 1], ev.top_logprobs[k]);
      }
    }
  }
}

// Prompt logprobs: for every prompt position after the first, the log-softmax of the raw logits of
// the position before (transformers' prefill logits of the fixture), the token's rank and the top
// alternatives; reported once, in order, before the first sampled token, with the prompt prefilled in
// chunks of 5 (max_step_tokens) so positions cross chunk boundaries; a resumed request reports the
// positions of its original prompt only.
TEST(SchedulerSampling, PromptLogprobsMatchTransformersLogSoftmax) {
  const std::string dir = testing::FixturesDir() + "/qwen3-moe-f32";
  const testing::Fixture f = LoadFixture("qwen3-moe-f32");
  const testing::FixturePrompt& fp = f.prompts[2];
  ASSERT_GT(fp.prompt.size(), 10u);
  auto e = MakeSmallEngine(dir, 64, /*max_step_tokens=*/5);
  const int V = e->config().vocab_size;
  const std::vector<float> prefill = f.Tensor("prompt2.prefill_logits");
  ASSERT_EQ(prefill.size(), fp.prompt.size() * V);
  for (int64_t resumed : {0, 2}) {
    Scheduler s(*e);
    ScheduledRequest r;
    r.id = 1;
    r.prompt = fp.prompt;
    r.max_tokens = 3;
    r.resumed_output = resumed;  // the last `resumed` prompt tokens count as output
    r.prompt_logprobs = 2;
    ASSERT_TRUE(s.Submit(r).ok());
    std::vector<control::TokenEvent> all;
    ASSERT_NO_FATAL_FAILURE(RunToEnd(s, &all));
    const size_t P = fp.prompt.size() - static_cast<size_t>(resumed);
    ASSERT_EQ(all.size(), (P - 1) + static_cast<size_t>(3 - resumed)) << "resumed " << resumed;
    for (size_t p = 1; p < P; ++p) {
      const control::TokenEvent& ev = all[p - 1];
      const float* ref = prefill.data() + (p - 1) * V;
      double mx = ref[0], z = 0;
      for (int t = 0; t < V; ++t) mx = std::max<double>(mx, ref[t]);
      for (int t = 0; t < V; ++t) z += std::exp(ref[t] - mx);
      auto lp = [&](int32_t t) { return ref[t] - mx - std::log(z); };
      ASSERT_EQ(ev.prompt_position, static_cast<int32_t>(p));
      EXPECT_EQ(ev.token, fp.prompt[p]);
      ASSERT_TRUE(ev.has_logprob);
      EXPECT_NEAR(ev.logprob, lp(ev.token), 2e-4) << "position " << p;
      int surely_above = 0, maybe_above = 0;  // near-ties may fall either way
      for (int t = 0; t < V; ++t) {
        surely_above += lp(t) > lp(ev.token) + 1e-4 ? 1 : 0;
        maybe_above += t != ev.token && lp(t) > lp(ev.token) - 1e-4 ? 1 : 0;
      }
      EXPECT_GE(ev.rank, 1 + surely_above) << "position " << p;
      EXPECT_LE(ev.rank, 1 + maybe_above) << "position " << p;
      ASSERT_EQ(ev.top_ids.size(), 2u);
      for (size_t k = 0; k < 2; ++k) EXPECT_NEAR(ev.top_logprobs[k], lp(ev.top_ids[k]), 2e-4);
      EXPECT_GE(ev.top_logprobs[0], ev.top_logprobs[1]);
    }
    for (size_t i = P - 1; i < all.size(); ++i) EXPECT_EQ(all[i].prompt_position, -1) << "sampled tokens follow";
  }
}

// n > 1: choices submitted with fork_of share the first one's prefill (the prompt is fed once; KV
// blocks shared, the partly filled last one copied) and each samples with its own seed — every
// choice's tokens equal those of the same request run alone. Greedy choices give transformers' tokens.
TEST(SchedulerForks, ChoicesSharePrefillAndEqualIndependentRuns) {
  const testing::Fixture f = LoadFixture("qwen3-moe-f32");
  const testing::FixturePrompt& fp = f.prompts[0];
  ASSERT_NE(fp.prompt.size() % 4, 0u) << "the last block must be partly filled (block size 4)";
  const int max_tokens = static_cast<int>(fp.greedy.size());
  auto request = [&](uint64_t id, float temperature, uint64_t seed, uint64_t fork_of) {
    ScheduledRequest r;
    r.id = id;
    r.prompt = fp.prompt;
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.fork_of = fork_of;
    return r;
  };
  auto tokens_of = [](const std::vector<control::TokenEvent>& all, uint64_t id) {
    std::vector<int32_t> out;
    for (const control::TokenEvent& e : all) {
      if (e.request == id && e.token >= 0) out.push_back(e.token);
    }
    return out;
  };
  for (float temperature : {0.0f, 1.0f}) {
    // Alone, one engine each: the reference tokens of seeds 11, 12, 13.
    std::vector<std::vector<int32_t>> alone;
    for (uint64_t seed : {11, 12, 13}) {
      auto e = MakeSmallEngine(f.dir, 64, 64);
      Scheduler s(*e);
      ASSERT_TRUE(s.Submit(request(1, temperature, seed, 0)).ok());
      std::vector<control::TokenEvent> all;
      ASSERT_NO_FATAL_FAILURE(RunToEnd(s, &all));
      alone.push_back(tokens_of(all, 1));
    }
    auto e = MakeSmallEngine(f.dir, 64, 64);
    Scheduler s(*e);
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(s.Submit(request(1 + i, temperature, 11 + i, i == 0 ? 0 : 1)).ok());
    EXPECT_EQ(s.waiting(), 3u);
    const int64_t free0 = e->kv_blocks().free_blocks();
    std::vector<control::TokenEvent> events, all;
    ASSERT_TRUE(s.Step(&events).ok());
    EXPECT_EQ(s.stats().last_step_prompt_tokens, static_cast<int64_t>(fp.prompt.size())) << "the prompt fed once";
    EXPECT_EQ(s.running(), 3u);
    const int64_t prompt_blocks = (static_cast<int64_t>(fp.prompt.size()) + 3) / 4;
    EXPECT_EQ(free0 - e->kv_blocks().free_blocks(), prompt_blocks + 2) << "full blocks shared, the last one copied twice";
    all = events;
    ASSERT_NO_FATAL_FAILURE(RunToEnd(s, &all));
    for (uint64_t i = 0; i < 3; ++i) {
      EXPECT_EQ(tokens_of(all, 1 + i), alone[i]) << "choice " << i << " at temperature " << temperature;
      if (temperature == 0.0f) {
        EXPECT_EQ(tokens_of(all, 1 + i), fp.greedy) << "choice " << i;
      }
    }
    EXPECT_EQ(e->kv_blocks().free_blocks(), free0) << "every block back";
  }
  // A choice naming another waiting choice waits on that one's parent: all three fork at its prompt.
  {
    auto e3 = MakeSmallEngine(f.dir, 64, 64);
    Scheduler s3(*e3);
    ASSERT_TRUE(s3.Submit(request(1, 0.0f, 1, 0)).ok());
    ASSERT_TRUE(s3.Submit(request(2, 0.0f, 2, 1)).ok());
    ASSERT_TRUE(s3.Submit(request(3, 0.0f, 3, 2)).ok());
    std::vector<control::TokenEvent> events;
    ASSERT_TRUE(s3.Step(&events).ok());
    EXPECT_EQ(s3.stats().last_step_prompt_tokens, static_cast<int64_t>(fp.prompt.size()));
    EXPECT_EQ(s3.running(), 3u);
  }
  // A choice whose parent is unknown, or already past its prompt, prefills on its own.
  auto e = MakeSmallEngine(f.dir, 64, 64);
  Scheduler s(*e);
  ASSERT_TRUE(s.Submit(request(1, 0.0f, 1, 99)).ok());
  std::vector<control::TokenEvent> events;
  ASSERT_TRUE(s.Step(&events).ok());
  ASSERT_TRUE(s.Submit(request(2, 0.0f, 1, 1)).ok());
  ASSERT_TRUE(s.Step(&events).ok());
  EXPECT_EQ(s.stats().last_step_prompt_tokens, static_cast<int64_t>(fp.prompt.size()));
  // Cancelling a parent before its prompt is in lets its waiting choice run on its own.
  Scheduler c(*e);
  ASSERT_TRUE(c.Submit(request(1, 0.0f, 1, 0)).ok());
  ASSERT_TRUE(c.Submit(request(2, 0.0f, 1, 1)).ok());
  EXPECT_TRUE(c.Cancel(1));
  std::vector<control::TokenEvent> rest;
  ASSERT_NO_FATAL_FAILURE(RunToEnd(c, &rest));
  EXPECT_EQ(tokens_of(rest, 2), fp.greedy);
}

// Prompt-logprob rows are bounded per step over all requests (each row returns a row of logits):
// three requests of 200 prompt tokens feed at most kPromptLogprobStepRows tokens in one step.
TEST(SchedulerSampling, PromptLogprobRowsAreBoundedPerStep) {
  const std::string dir = testing::FixturesDir() + "/qwen3-moe-f32";
  auto e = MakeSmallEngine(dir, 1024, /*max_step_tokens=*/2048);
  Scheduler s(*e);
  for (uint64_t id = 1; id <= 3; ++id) {
    ScheduledRequest r;
    r.id = id;
    for (int i = 0; i < 200; ++i) r.prompt.push_back((i * 7 + static_cast<int>(id)) % 300);
    r.max_tokens = 1;
    r.prompt_logprobs = 0;
    ASSERT_TRUE(s.Submit(r).ok());
  }
  std::vector<control::TokenEvent> events;
  int64_t fed = 0;
  size_t prompt_events = 0;
  while (s.HasWork()) {
    events.clear();
    ASSERT_TRUE(s.Step(&events).ok());
    EXPECT_LE(s.stats().last_step_prompt_tokens, kPromptLogprobStepRows);
    fed += s.stats().last_step_prompt_tokens;
    for (const control::TokenEvent& ev : events) prompt_events += ev.prompt_position >= 0 ? 1 : 0;
  }
  EXPECT_EQ(fed, 600);
  EXPECT_EQ(prompt_events, 3u * 199u) << "every prompt position after the first, once";
}

}  // namespace
}  // namespace shoal
