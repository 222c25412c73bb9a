// The control-plane frame format (control/wire.h): round trips, and clean errors for every kind of
// malformed input a buggy or hostile peer could send.
#include "control/wire.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/unit/test_files.h"

namespace shoal::control {
namespace {

using testing::MessageHas;

StatusOr<Message> Decode(const std::string& frame) {
  const auto* p = reinterpret_cast<const uint8_t*>(frame.data());
  SHOAL_ASSIGN_OR_RETURN(FrameHeader h, DecodeHeader(std::span<const uint8_t>(p, kHeaderBytes)));
  if (h.payload_bytes != frame.size() - kHeaderBytes) return InvalidArgument("length mismatch");
  return DecodePayload(static_cast<MessageType>(h.type), std::span<const uint8_t>(p + kHeaderBytes, h.payload_bytes));
}

std::vector<Message> Samples() {
  Hello h;
  h.group = "g0";
  h.rank = 1;
  h.size = 2;
  h.model = "tiny";
  h.vocab_size = 320;
  h.max_context = 256;
  h.max_num_seqs = 8;
  h.block_size = 16;
  h.kv_blocks = 100;
  h.kv_tokens = 1600;
  h.kv_bytes_per_token = 6912;
  h.num_experts = 10;
  h.local_experts = {5, 6, 7, 8, 9};
  h.pid = 4242;
  h.host = "node-1";
  h.token = "s3cret";
  Submit s;
  s.request = 77;
  s.max_tokens = 9;
  s.ignore_eos = true;
  s.sampling = {.temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .presence_penalty = 0.5f, .frequency_penalty = -0.5f, .seed = 123456789};
  s.stop_ids = {2, 3};
  s.prompt = {1, 2, 3, 4};
  s.resumed_output = 2;  // the last two prompt tokens were generated before a migration
  s.bias_ids = {5};
  s.bias_values = {-1.5f};
  s.logprobs = 2;
  s.prompt_logprobs = 1;
  s.fork_of = 76;
  s.json_schema = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  Tokens t;
  t.events = {{77, 5, FinishReason::kNone, ""}, {78, -1, FinishReason::kError, "boom"}, {79, 3, FinishReason::kStop, ""}};
  TokenEvent with_logprob{80, 4, FinishReason::kNone, ""};
  with_logprob.has_logprob = true;
  with_logprob.logprob = -0.25f;
  with_logprob.top_ids = {4, 9};
  with_logprob.top_logprobs = {-0.25f, -2.0f};
  t.events.push_back(with_logprob);
  with_logprob.prompt_position = 3;  // a prompt token's
  with_logprob.rank = 1;
  t.events.push_back(with_logprob);
  Heartbeat hb;
  hb.steps = 10;
  hb.step_seconds_total = 1.5;
  hb.last_step_seconds = 0.01;
  hb.running = 3;
  hb.waiting = 1;
  hb.kv_blocks_used = 20;
  hb.kv_blocks_total = 100;
  hb.preemptions = 2;
  hb.expert_tokens = {1, 2, 3};
  hb.layer_expert_tokens = {0, 0, 0, 1, 2, 3};  // a dense layer, then a MoE layer
  hb.iteration_tokens.Observe(7, IterationTokenBuckets());
  hb.queue_seconds.Observe(0.01, RequestPhaseBuckets());
  hb.decode_seconds.Observe(9000, RequestPhaseBuckets());  // above every bound: the +Inf bucket
  hb.placement_generation = 2;
  hb.rebalance_failed = 1;
  hb.rebalance_error = "rank 1: no space";
  Rendezvous rv{"g0", 0, 4, "tiny", "s3cret", std::string(128, '\x07')};
  // 2 layers (a dense one, then a MoE layer of 3 experts with a spare slot) over 2 ranks.
  Rebalance rb{5, 2, 2, {0, 0, 2, 2}, {0, 1, 1, 2}};
  return {h,  Welcome{3, 500}, Reject{"no"}, s, Cancel{77}, t, hb, Wake{}, Shutdown{}, Bye{"done"}, rv,
          RendezvousId{std::string(128, '\x07')}, rb};
}

// The fuzz target's seeds (tests/fuzz/corpus/control_frame/seed*) are these samples' frames: a seed of
// an older protocol version stops at the header and fuzzes nothing past it. SHOAL_WRITE_FUZZ_SEEDS=1
// rewrites them after a protocol change.
TEST(Wire, FuzzSeedsSpeakThisProtocol) {
  const std::filesystem::path dir = std::filesystem::path(SHOAL_SOURCE_DIR) / "tests/fuzz/corpus/control_frame";
  const std::vector<Message> samples = Samples();
  if (const char* w = std::getenv("SHOAL_WRITE_FUZZ_SEEDS"); w != nullptr && std::string(w) == "1") {
    for (size_t i = 0; i < samples.size(); ++i) {
      std::ofstream(dir / ("seed" + std::to_string(i)), std::ios::binary) << EncodeFrame(samples[i]);
    }
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    std::ifstream in(dir / ("seed" + std::to_string(i)), std::ios::binary);
    const std::string frame((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(frame, EncodeFrame(samples[i])) << "seed" << i << " is stale: run wire_test with SHOAL_WRITE_FUZZ_SEEDS=1";
  }
}

TEST(Wire, EveryMessageRoundTrips) {
  for (const Message& m : Samples()) {
    const std::string frame = EncodeFrame(m);
    auto back = Decode(frame);
    ASSERT_TRUE(back.ok()) << MessageTypeName(TypeOf(m)) << ": " << back.status().ToString();
    EXPECT_EQ(TypeOf(*back), TypeOf(m));
    EXPECT_EQ(EncodeFrame(*back), frame) << MessageTypeName(TypeOf(m));
  }
  auto s = Decode(EncodeFrame(Samples()[3]));
  const auto& sub = std::get<Submit>(*s);
  EXPECT_EQ(sub.prompt, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_FLOAT_EQ(sub.sampling.temperature, 0.7f);
  EXPECT_EQ(sub.sampling.seed, 123456789u);
  EXPECT_EQ(sub.resumed_output, 2u);
  EXPECT_EQ(std::get<Hello>(*Decode(EncodeFrame(Samples()[0]))).kv_tokens, 1600u);
  EXPECT_EQ(std::get<Hello>(*Decode(EncodeFrame(Samples()[0]))).kv_bytes_per_token, 6912u);
}

TEST(Wire, EveryTruncationIsACleanError) {
  for (const Message& m : Samples()) {
    const std::string frame = EncodeFrame(m);
    for (size_t cut = kHeaderBytes; cut < frame.size(); ++cut) {
      const auto* p = reinterpret_cast<const uint8_t*>(frame.data());
      auto r = DecodePayload(TypeOf(m), std::span<const uint8_t>(p + kHeaderBytes, cut - kHeaderBytes));
      EXPECT_FALSE(r.ok()) << MessageTypeName(TypeOf(m)) << " cut at " << cut;
      EXPECT_TRUE(MessageHas(r.status(), MessageTypeName(TypeOf(m)))) << r.status().ToString();
    }
  }
}

// The coordinator reads no first frame larger than kMaxHandshakePayloadBytes from an unauthenticated
// peer: a Hello and a Rendezvous with every field at its limit must still fit.
TEST(Wire, LargestHandshakesFitTheHandshakeBound) {
  // Every field at the limit its decoder allows (group 256, model 1024, host and token 256 bytes).
  Hello h;
  h.group = std::string(256, 'g');
  h.model = std::string(1024, 'm');
  h.host = h.token = std::string(256, 'h');
  h.rank = 0, h.size = 1;
  h.vocab_size = h.max_context = h.max_num_seqs = h.block_size = 1;
  h.num_experts = kMaxExperts;
  h.local_experts.assign(kMaxExperts, 7);
  Rendezvous r;
  r.group = std::string(256, 'g');
  r.model = std::string(1024, 'm');
  r.token = std::string(256, 't');
  r.rank = 0, r.size = 2;
  r.id = std::string(kMaxRendezvousIdBytes, 'i');
  for (const Message& m : {Message(h), Message(r)}) {
    const std::string frame = EncodeFrame(m);
    EXPECT_LE(frame.size() - kHeaderBytes, kMaxHandshakePayloadBytes) << MessageTypeName(TypeOf(m));
    const auto decoded = Decode(frame);
    EXPECT_TRUE(decoded.ok()) << MessageTypeName(TypeOf(m)) << ": " << decoded.status().ToString();
  }
}

TEST(Wire, BadHeadersAreRejected) {
  std::string f = EncodeFrame(Wake{});
  auto bytes = [&] { return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(f.data()), kHeaderBytes); };
  f[0] = 'X';
  EXPECT_TRUE(MessageHas(DecodeHeader(bytes()).status(), "bad magic"));
  f = EncodeFrame(Wake{});
  f[4] = 9;  // version
  EXPECT_TRUE(MessageHas(DecodeHeader(bytes()).status(), "protocol version 9"));
  f = EncodeFrame(Wake{});
  f[6] = 99;  // type
  EXPECT_TRUE(MessageHas(DecodeHeader(bytes()).status(), "unknown message type 99"));
  f = EncodeFrame(Wake{});
  const uint32_t huge = kMaxPayloadBytes + 1;
  std::memcpy(f.data() + 8, &huge, 4);
  EXPECT_TRUE(MessageHas(DecodeHeader(bytes()).status(), "exceeds the limit"));
}

TEST(Wire, FieldsAreChecked) {
  Submit s = std::get<Submit>(Samples()[3]);
  s.prompt = {1, -5};
  s.resumed_output = 0;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.prompt: negative token id -5"));
  s = std::get<Submit>(Samples()[3]);
  s.sampling.top_p = 0;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.top_p"));
  s.sampling.top_p = std::nanf("");
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "not a finite number"));
  s = std::get<Submit>(Samples()[3]);
  s.max_tokens = 0;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.max_tokens"));
  s = std::get<Submit>(Samples()[3]);
  s.sampling.min_p = 1.5f;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.min_p"));
  s = std::get<Submit>(Samples()[3]);
  s.sampling.repetition_penalty = 0;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.repetition_penalty"));
  s = std::get<Submit>(Samples()[3]);
  s.sampling.min_tokens = static_cast<int32_t>(s.max_tokens) + 1;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.min_tokens"));
  s = std::get<Submit>(Samples()[3]);
  s.bias_ids = {1, 2};
  s.bias_values = {1.0f};
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.bias_values"));
  s.bias_values = {1.0f, 200.0f};
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.bias_values"));
  s.bias_values = {1.0f, -2.5f};
  s.sampling.min_p = 0.1f;
  s.sampling.repetition_penalty = 1.3f;
  s.sampling.min_tokens = 1;
  const Submit back = std::get<Submit>(*Decode(EncodeFrame(s)));
  EXPECT_EQ(back.bias_ids, s.bias_ids);
  EXPECT_EQ(back.bias_values, s.bias_values);
  EXPECT_EQ(back.sampling.min_p, 0.1f);
  EXPECT_EQ(back.sampling.repetition_penalty, 1.3f);
  EXPECT_EQ(back.sampling.min_tokens, 1);
  s.logprobs = 21;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.logprobs"));
  {
    // Token events with logprobs: round trip, and a top list that does not pair up is refused.
    Tokens lt;
    lt.events.emplace_back(3, 17, FinishReason::kNone, "");
    lt.events[0].has_logprob = true;
    lt.events[0].logprob = -0.5f;
    lt.events[0].top_ids = {17, 4};
    lt.events[0].top_logprobs = {-0.5f, -1.5f};
    const Tokens tb = std::get<Tokens>(*Decode(EncodeFrame(lt)));
    EXPECT_EQ(tb.events[0].top_ids, lt.events[0].top_ids);
    EXPECT_EQ(tb.events[0].logprob, -0.5f);
    lt.events[0].top_logprobs = {-0.5f};
    EXPECT_TRUE(MessageHas(Decode(EncodeFrame(lt)).status(), "Tokens.events.top_logprobs"));
    lt.events[0].top_logprobs = {-0.5f, 0.5f};
    EXPECT_TRUE(MessageHas(Decode(EncodeFrame(lt)).status(), "Tokens.events.top_logprobs"));
    // A prompt logprob: position and rank round trip; position 0, rank 0 or an end with it are refused.
    lt.events[0].top_logprobs = {-0.5f, -1.5f};
    lt.events[0].prompt_position = 4;
    lt.events[0].rank = 2;
    const Tokens pb = std::get<Tokens>(*Decode(EncodeFrame(lt)));
    EXPECT_EQ(pb.events[0].prompt_position, 4);
    EXPECT_EQ(pb.events[0].rank, 2);
    lt.events[0].rank = 0;
    EXPECT_TRUE(MessageHas(Decode(EncodeFrame(lt)).status(), "Tokens.events.prompt_position"));
    lt.events[0].rank = 1;
    lt.events[0].prompt_position = 0;
    EXPECT_TRUE(MessageHas(Decode(EncodeFrame(lt)).status(), "Tokens.events.prompt_position"));
    lt.events[0].prompt_position = 1;
    lt.events[0].finish = FinishReason::kStop;
    EXPECT_TRUE(MessageHas(Decode(EncodeFrame(lt)).status(), "Tokens.events.prompt_position"));
  }
  s.logprobs = 0;
  s.prompt_logprobs = 21;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.prompt_logprobs"));
  s.prompt_logprobs = 5;
  s.fork_of = 77;
  EXPECT_EQ(std::get<Submit>(*Decode(EncodeFrame(s))).prompt_logprobs, 5);
  EXPECT_EQ(std::get<Submit>(*Decode(EncodeFrame(s))).fork_of, 77u);
  EXPECT_EQ(std::get<Submit>(*Decode(EncodeFrame(s))).json_schema, s.json_schema);
  s.json_schema.assign(kMaxJsonSchemaBytes + 1, ' ');
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(s)).status(), "Submit.json_schema: length 65537 exceeds"));
  s.json_schema.clear();

  Hello h = std::get<Hello>(Samples()[0]);
  h.rank = 2;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(h)).status(), "Hello.rank: 2 is not below size 2"));
  h = std::get<Hello>(Samples()[0]);
  h.local_experts = {10};
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(h)).status(), "Hello.local_experts"));
  h = std::get<Hello>(Samples()[0]);
  h.tp_size = 3;  // of a group of 2
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(h)).status(), "Hello.tp_size"));
  h.tp_size = 2;
  h.tp_rank = 2;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(h)).status(), "Hello.tp_rank"));
  h.tp_rank = 1;
  h.replica = 1;  // a group of 2 at TP 2 has one replica
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(h)).status(), "Hello.tp_rank"));
  h.replica = 0;
  EXPECT_EQ(std::get<Hello>(*Decode(EncodeFrame(h))).tp_rank, 1u);

  // Heartbeat histograms: one count per bucket and +Inf (or none yet), and a finite, non-negative sum.
  Heartbeat hb = std::get<Heartbeat>(Samples()[6]);
  hb.prefill_seconds.counts = {1, 2};
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(hb)).status(), "Heartbeat.prefill_seconds: has 2 buckets, not 22"));
  hb = std::get<Heartbeat>(Samples()[6]);
  hb.tp_seconds = -0.5;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(hb)).status(), "Heartbeat.tp_seconds: is invalid"));
  hb.tp_seconds = 0.25;
  EXPECT_EQ(std::get<Heartbeat>(*Decode(EncodeFrame(hb))).tp_seconds, 0.25);
  hb.layer_expert_tokens = {1, 2};  // not whole layers of 3 experts
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(hb)).status(), "Heartbeat.layer_expert_tokens: has 2 entries"));
  hb = std::get<Heartbeat>(Samples()[6]);
  hb.queue_seconds.sum = -1;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(hb)).status(), "Heartbeat.queue_seconds: sum is invalid"));
  hb.queue_seconds.sum = std::nan("");
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(hb)).status(), "Heartbeat.queue_seconds: sum is invalid"));

  // Rebalance: slots for every (layer, rank), experts adding up to them, ids in range, a generation.
  Rebalance rb = std::get<Rebalance>(Samples()[12]);
  EXPECT_EQ(std::get<Heartbeat>(*Decode(EncodeFrame(Samples()[6]))).rebalance_error, "rank 1: no space");
  rb.slots.pop_back();
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rb)).status(), "Rebalance.slots: has 3 entries, not layers × ranks = 4"));
  rb = std::get<Rebalance>(Samples()[12]);
  rb.experts.push_back(0);
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rb)).status(), "Rebalance.experts: has 5 entries, the slots add up to 4"));
  rb = std::get<Rebalance>(Samples()[12]);
  rb.experts[0] = kMaxExperts;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rb)).status(), "Rebalance.experts: holds expert 65536"));
  rb = std::get<Rebalance>(Samples()[12]);
  rb.generation = 0;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rb)).status(), "Rebalance.generation: is 0"));
  rb = std::get<Rebalance>(Samples()[12]);
  rb.ranks = 0;
  rb.layers = 0;
  rb.slots.clear();
  rb.experts.clear();
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rb)).status(), "Rebalance.ranks: is 0"));

  Rendezvous rv = std::get<Rendezvous>(Samples()[10]);
  rv.id.clear();
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rv)).status(), "Rendezvous.id: is empty: rank 0 posts"));
  rv = std::get<Rendezvous>(Samples()[10]);
  rv.rank = 1;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rv)).status(), "Rendezvous.id: only rank 0 posts"));
  rv.id.clear();
  rv.rank = 4;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rv)).status(), "Rendezvous.rank: 4 is not below size 4"));
  rv = std::get<Rendezvous>(Samples()[10]);
  rv.id = std::string(kMaxRendezvousIdBytes + 1, 'x');
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(rv)).status(), "Rendezvous.id: length 1025 exceeds"));
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(RendezvousId{})).status(), "RendezvousId.id: is empty"));

  // A count that claims more elements than the bytes present fails before allocating.
  std::string f = EncodeFrame(Cancel{1});
  Submit big = std::get<Submit>(Samples()[3]);
  big.bias_ids.clear();  // the offsets below count empty bias vectors
  big.bias_values.clear();
  big.json_schema.clear();
  f = EncodeFrame(big);
  const size_t prompt_count_at =
      f.size() - 4 /* empty json_schema */ - 8 /* fork_of */ - 8 /* logprobs, prompt_logprobs */ - 8 /* empty bias_ids, bias_values */ - 4 /* resumed_output */ - 4 * big.prompt.size() - 4;
  const uint32_t lie = 1000000;
  std::memcpy(f.data() + prompt_count_at, &lie, 4);
  EXPECT_TRUE(MessageHas(Decode(f).status(), "Submit.prompt: truncated"));
  // A resumed request must keep a prompt token of its own and a token to generate.
  big.resumed_output = static_cast<uint32_t>(big.prompt.size());
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(big)).status(), "Submit.resumed_output"));
  big.resumed_output = big.max_tokens;
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(big)).status(), "Submit.resumed_output"));

  // Trailing garbage.
  f = EncodeFrame(Cancel{1});
  f += "xx";
  uint32_t n = 10;
  std::memcpy(f.data() + 8, &n, 4);
  EXPECT_TRUE(MessageHas(Decode(f).status(), "unexpected bytes"));

  Tokens t;
  t.events = {{1, -1, FinishReason::kNone, ""}};
  EXPECT_TRUE(MessageHas(Decode(EncodeFrame(t)).status(), "neither a token nor an end"));
}

}  // namespace
}  // namespace shoal::control
