// shoal's YAML engine config (common/config.h): defaults, a full valid file, and every rejection
// naming "file:line: dotted.key" so an operator can fix the file without reading shoal's source.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"

namespace shoal::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSource = "file.yaml";

StatusOr<EngineConfig> Parse(const std::string& yaml) { return ParseEngineConfig(yaml, kSource, ""); }

// A single-quoted YAML scalar, so any path (spaces, '#', ': ') survives.
std::string YamlQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
  return out + "'";
}

// ---- accepted configs ----------------------------------------------------------------------------

// Every section and key is optional: an empty (or comment-only) file is all defaults.
TEST(ConfigTest, EmptyTextGivesDefaults) {
  for (const char* text : {"", "# nothing configured\n", "\n\n"}) {
    SCOPED_TRACE("'" + std::string(text) + "'");
    auto r = Parse(text);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const EngineConfig defaults;
    EXPECT_EQ(r->source, kSource);
    EXPECT_EQ(r->model_path, "");
    EXPECT_EQ(r->threads, defaults.threads);
    EXPECT_EQ(r->max_num_seqs, defaults.max_num_seqs);
    EXPECT_EQ(r->kv_block_size, defaults.kv_block_size);
    EXPECT_EQ(r->kv_cache_mib, defaults.kv_cache_mib);
  }
  // The documented defaults (common/config.h).
  const EngineConfig d;
  EXPECT_EQ(d.threads, 0);
  EXPECT_EQ(d.max_num_seqs, 64);
  EXPECT_EQ(d.kv_block_size, 16);
  EXPECT_EQ(d.kv_cache_mib, 256);
}

TEST(ConfigTest, FullValidConfig) {
  const std::string model_dir = FixturesDir() + "/qwen3-moe-f32";
  const std::string yaml = "# a complete config\n"
                           "model:\n"
                           "  path: " + YamlQuote(model_dir) + "\n"
                           "engine:\n"
                           "  threads: 3\n"
                           "  max_num_seqs: 8\n"
                           "  max_step_tokens: 512\n"
                           "kv_cache:\n"
                           "  block_size: 32\n"
                           "  memory_mib: 1024\n"
                           "parallel:\n"
                           "  collective_timeout_ms: 2500\n"
                           "  startup_timeout_s: 30\n";
  auto r = ParseEngineConfig(yaml, kSource, "/somewhere/else");  // an absolute path ignores base_dir
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->model_path, fs::path(model_dir).lexically_normal().string());
  EXPECT_EQ(r->threads, 3);
  EXPECT_EQ(r->ResolvedThreads(), 3);
  EXPECT_EQ(r->max_num_seqs, 8);
  EXPECT_EQ(r->kv_block_size, 32);
  EXPECT_EQ(r->kv_cache_mib, 1024);
  EXPECT_EQ(r->max_step_tokens, 512);
  EXPECT_EQ(r->collective_timeout_ms, 2500);
  EXPECT_EQ(r->startup_timeout_s, 30);
}

TEST(ConfigTest, ParallelAndStepSettingsAreRangeChecked) {
  auto a = Parse("parallel:\n  collective_timeout_ms: 0\n");
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(MessageHas(a.status(), "parallel.collective_timeout_ms: must be in [1,")) << a.status().ToString();
  auto b = Parse("engine:\n  max_step_tokens: 0\n");
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(MessageHas(b.status(), "engine.max_step_tokens: must be in [1,")) << b.status().ToString();
  auto c = Parse("parallel:\n  timeout: 5\n");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(MessageHas(c.status(), "parallel.timeout: unknown key")) << c.status().ToString();
}

TEST(ConfigTest, EngineDeviceIsCheckedAtLoad) {
  auto a = Parse("engine:\n  device: cuda:1\n");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->device, "cuda:1");
  EXPECT_EQ(Parse("").value().device, "cpu");
  for (const char* bad : {"tpu", "cuda:", "cuda:x", "cuda:1234", "CUDA"}) {
    auto b = Parse(std::string("engine:\n  device: \"") + bad + "\"\n");
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_TRUE(MessageHas(b.status(), "engine.device")) << b.status().ToString();
    EXPECT_TRUE(MessageHas(b.status(), "expected cpu, cuda or cuda:N")) << b.status().ToString();
  }
  auto d = ParseDevice("cuda");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->cuda);
  EXPECT_EQ(d->index, -1);
}

// The experimental GPU kernels are off unless asked for, and the key takes booleans only.
TEST(ConfigTest, ExperimentalGpuKernelsIsAnOptInBoolean) {
  EXPECT_FALSE(Parse("").value().experimental_gpu_kernels);
  auto on = Parse("engine:\n  device: cuda\n  experimental_gpu_kernels: true\n");
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_TRUE(on->experimental_gpu_kernels);
  auto bad = Parse("engine:\n  experimental_gpu_kernels: sometimes\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(MessageHas(bad.status(), "engine.experimental_gpu_kernels")) << bad.status().ToString();
  EXPECT_TRUE(MessageHas(bad.status(), "true or false")) << bad.status().ToString();
}

// The keys behind the vLLM-style flags: engine.max_model_len, engine.dtype (with vLLM's spellings)
// and kv_cache.memory_fraction, each defaulting to "as the model / memory_mib says" and range-checked.
TEST(ConfigTest, MaxModelLenDtypeAndMemoryFraction) {
  const EngineConfig d = Parse("").value();
  EXPECT_EQ(d.max_model_len, 0);
  EXPECT_EQ(d.dtype, "auto");
  EXPECT_EQ(d.kv_memory_fraction, 0);
  auto a = Parse("engine:\n  max_model_len: 4096\n  dtype: bfloat16\nkv_cache:\n  memory_fraction: 0.9\n");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->max_model_len, 4096);
  EXPECT_EQ(a->dtype, "bfloat16");
  EXPECT_DOUBLE_EQ(a->kv_memory_fraction, 0.9);
  for (const auto& [text, dtype] : std::vector<std::pair<std::string, std::optional<DType>>>{
           {"auto", std::nullopt}, {"bf16", DType::kBF16}, {"half", DType::kF16}, {"float16", DType::kF16},
           {"float", DType::kF32}, {"fp32", DType::kF32}}) {
    auto p = ParseWeightDtype(text);
    ASSERT_TRUE(p.ok()) << text;
    EXPECT_EQ(*p, dtype) << text;
  }
  struct Bad { const char* yaml; const char* key; const char* why; };
  for (const Bad& b : {Bad{"engine:\n  dtype: int4\n", "engine.dtype", "expected auto, bfloat16, float16 or float32"},
                       Bad{"engine:\n  max_model_len: -1\n", "engine.max_model_len", "must be in"},
                       Bad{"kv_cache:\n  memory_fraction: 1.5\n", "kv_cache.memory_fraction", "must be in [0, 1]"},
                       Bad{"kv_cache:\n  memory_fraction: lots\n", "kv_cache.memory_fraction", "expected a number"}}) {
    auto r = Parse(b.yaml);
    ASSERT_FALSE(r.ok()) << b.yaml;
    EXPECT_TRUE(MessageHas(r.status(), b.key)) << r.status().ToString();
    EXPECT_TRUE(MessageHas(r.status(), b.why)) << r.status().ToString();
  }
}

// --print-config's YAML reads back to the same configuration (secrets excepted: they print as <set>).
TEST(ConfigTest, PrintedConfigReadsBack) {
  auto a = Parse("engine:\n  max_model_len: 4096\n  dtype: bfloat16\n  device: cuda:1\nkv_cache:\n"
                 "  memory_fraction: 0.9\n  block_size: 32\nserver:\n  port: 9000\n  metrics_vllm_names: true\n"
                 "cluster:\n  groups: 3\nparallel:\n  startup_timeout_s: 1800\n");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const std::string text = EngineConfigYaml(*a);
  EXPECT_NE(text.find("memory_fraction: 0.9\n"), std::string::npos) << text;
  auto b = Parse(text);
  ASSERT_TRUE(b.ok()) << b.status().ToString() << "\n" << text;
  EXPECT_EQ(EngineConfigYaml(*b), text);
  EXPECT_EQ(b->max_model_len, 4096);
  EXPECT_EQ(b->device, "cuda:1");
  EXPECT_DOUBLE_EQ(b->kv_memory_fraction, 0.9);
  EXPECT_TRUE(b->server.metrics_vllm_names);
  EXPECT_EQ(b->cluster.groups, 3);
  EXPECT_EQ(b->startup_timeout_s, 1800);
  a->server.api_keys = {"sk-secret"};
  a->server.control_token = "tok-secret";
  const std::string secret = EngineConfigYaml(*a);
  EXPECT_EQ(secret.find("secret"), std::string::npos) << secret;
}

// The limits on what comes from outside: defaults, and their ranges checked at load.
TEST(ConfigTest, ServerLimits) {
  const EngineConfig d = Parse("").value();
  EXPECT_EQ(d.server.max_connections, 4096);
  EXPECT_EQ(d.server.max_control_connections, 4096);
  EXPECT_EQ(d.server.keepalive_timeout_s, 30);
  EXPECT_EQ(d.server.request_timeout_s, 0);
  EXPECT_EQ(d.server.group_forget_s, 60);
  auto set = Parse("server:\n  max_connections: 10\n  max_control_connections: 20\n  keepalive_timeout_s: 5\n"
                   "  request_timeout_s: 600\n  group_forget_s: 7\n");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->server.max_connections, 10);
  EXPECT_EQ(set->server.max_control_connections, 20);
  EXPECT_EQ(set->server.keepalive_timeout_s, 5);
  EXPECT_EQ(set->server.request_timeout_s, 600);
  EXPECT_EQ(set->server.group_forget_s, 7);
  for (const char* bad : {"max_connections: 0", "keepalive_timeout_s: 0", "request_timeout_s: -1", "group_forget_s: 0"}) {
    auto b = Parse(std::string("server:\n  ") + bad + "\n");
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_TRUE(MessageHas(b.status(), std::string("server.") + std::string(bad).substr(0, std::string(bad).find(':'))))
        << b.status().ToString();
  }
}

// threads: 0 means every online core, never 0 threads.
TEST(ConfigTest, ZeroThreadsResolvesToAtLeastOne) {
  auto r = Parse("engine:\n  threads: 0\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(r->ResolvedThreads(), 1);
}

// The range ends themselves are accepted (1 and 1024 are powers of two).
TEST(ConfigTest, BoundaryValuesAreAccepted) {
  auto r = Parse("kv_cache:\n  block_size: 1\nengine:\n  threads: 1024\n  max_num_seqs: 1\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kv_block_size, 1);
  r = Parse("kv_cache:\n  block_size: 1024\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kv_block_size, 1024);
}

// ---- unknown keys (typos) ------------------------------------------------------------------------

// A misspelt key must not be ignored silently (the default would apply unnoticed).
TEST(ConfigTest, UnknownTopLevelKeyNamesLineAndKey) {
  auto r = Parse("engine:\n"
                 "  threads: 2\n"
                 "kv_cahce:\n"
                 "  block_size: 16\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:3: kv_cahce"));
  EXPECT_TRUE(MessageHas(r.status(), "unknown key"));
  EXPECT_TRUE(MessageHas(r.status(), "kv_cache"));  // the known keys are listed
}

TEST(ConfigTest, UnknownNestedKeyNamesLineAndDottedKey) {
  auto r = Parse("# comment line\n"
                 "kv_cache:\n"
                 "  memory_mib: 64\n"
                 "  blok_size: 16\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:4: kv_cache.blok_size"));
  EXPECT_TRUE(MessageHas(r.status(), "unknown key"));
  EXPECT_TRUE(MessageHas(r.status(), "block_size"));
}

// ---- wrong types ---------------------------------------------------------------------------------

TEST(ConfigTest, NonIntegerValueNamesKeyAndLine) {
  auto r = Parse("engine:\n  threads: many\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:2: engine.threads"));
  EXPECT_TRUE(MessageHas(r.status(), "many"));

  // Not a scalar at all.
  r = Parse("kv_cache:\n  memory_mib: [1, 2]\n");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:2: kv_cache.memory_mib"));

  // A fraction is not an integer.
  r = Parse("engine:\n  max_num_seqs: 2.5\n");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "engine.max_num_seqs"));

  // Too large for an int: rejected, not wrapped.
  r = Parse("engine:\n  threads: 99999999999\n");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "engine.threads"));
}

// A section must be a mapping, and so must the document.
TEST(ConfigTest, SectionThatIsNotAMappingIsRejected) {
  auto r = Parse("engine: 4\n");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:1: engine"));
  EXPECT_TRUE(MessageHas(r.status(), "expected a mapping"));

  r = Parse("- model\n- engine\n");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "expected a mapping"));
}

// ---- out-of-range values -------------------------------------------------------------------------

TEST(ConfigTest, BlockSizeMustBeAPowerOfTwo) {
  auto r = Parse("kv_cache:\n  block_size: 12\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:2: kv_cache.block_size"));
  EXPECT_TRUE(MessageHas(r.status(), "power of two"));
  EXPECT_TRUE(MessageHas(r.status(), "12"));

  for (const char* bad : {"0", "2048", "-16"}) {
    SCOPED_TRACE(bad);
    r = Parse(std::string("kv_cache:\n  block_size: ") + bad + "\n");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status().ToString();
    EXPECT_TRUE(MessageHas(r.status(), "kv_cache.block_size"));
  }
}

TEST(ConfigTest, NegativeOrHugeCountsAreOutOfRange) {
  auto r = Parse("engine:\n  threads: -1\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:2: engine.threads"));
  EXPECT_TRUE(MessageHas(r.status(), "-1"));

  r = Parse("engine:\n  threads: 1025\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);

  r = Parse("engine:\n  max_num_seqs: 0\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(MessageHas(r.status(), "engine.max_num_seqs"));

  r = Parse("kv_cache:\n  memory_mib: 0\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(MessageHas(r.status(), "kv_cache.memory_mib"));
}

// ---- files and paths -----------------------------------------------------------------------------

// model.path is checked at load, so a typo in it fails here rather than deep in weight loading.
TEST(ConfigTest, MissingModelDirectoryIsNotFound) {
  ScratchDir scratch;
  const std::string missing = (scratch.path() / "no-such-model").string();
  auto r = Parse("model:\n  path: " + YamlQuote(missing) + "\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:2: model.path"));
  EXPECT_TRUE(MessageHas(r.status(), missing));

  // A regular file is not a model directory either.
  const fs::path file = scratch.path() / "not-a-dir";
  WriteText(file, "x");
  r = Parse("model:\n  path: " + YamlQuote(file.string()) + "\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), file.string()));
}

TEST(ConfigTest, MissingConfigFileIsNamed) {
  ScratchDir scratch;
  const std::string path = (scratch.path() / "absent.yaml").string();
  auto r = LoadEngineConfig(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), path));
}

// A YAML syntax error reports the line it is on (1-based), with the file name.
TEST(ConfigTest, YamlSyntaxErrorNamesLine) {
  auto r = Parse("engine:\n"
                 "  threads: 2\n"
                 "  max_num_seqs: ]\n");  // a flow-collection end in block context
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "file.yaml:3:"));
  EXPECT_TRUE(MessageHas(r.status(), "YAML syntax error"));
}

// A relative model.path is relative to the YAML file's directory, not the working directory, so a
// config can sit next to the models it names. Messages from a loaded file name that file.
TEST(ConfigTest, RelativeModelPathIsRelativeToYamlFile) {
  ScratchDir scratch;
  fs::create_directories(scratch.path() / "models" / "tiny");
  fs::create_directories(scratch.path() / "conf");
  const fs::path yaml = scratch.path() / "conf" / "engine.yaml";
  WriteText(yaml, "model:\n  path: ../models/tiny\nengine:\n  threads: 2\n");

  auto r = LoadEngineConfig(yaml.string());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, yaml.string());
  EXPECT_EQ(r->model_path, (scratch.path() / "models" / "tiny").lexically_normal().string());
  EXPECT_EQ(r->threads, 2);

  // The same relative path from a file one level deeper does not resolve (conf/models/tiny does not
  // exist); the message names that file, its line and the directory it looked for.
  fs::create_directories(scratch.path() / "conf" / "deeper");
  const fs::path other = scratch.path() / "conf" / "deeper" / "engine.yaml";
  WriteText(other, "# first line\nmodel:\n  path: ../models/tiny\n");
  r = LoadEngineConfig(other.string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), other.string() + ":3: model.path"));
  EXPECT_TRUE(MessageHas(r.status(), (other.parent_path() / "../models/tiny").string()));

  // Errors other than paths also carry the real file name.
  WriteText(yaml, "engine:\n  threds: 2\n");
  r = LoadEngineConfig(yaml.string());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), yaml.string() + ":2: engine.threds"));
}

}  // namespace
}  // namespace shoal::testing
