// Corrupt, truncated or mismatched model files: each must fail with a Status whose message names the
// file (and, where there is one, the tensor or config field) at fault, never crash or load garbage.
//
// Each test copies a committed fixture into a fresh scratch directory and damages the copy, or builds a
// small safetensors image by hand, so the fixtures themselves are never touched.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "model/checkpoint.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"

namespace shoal::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- helpers --------------------------------------------------------------------------------------

// Copies tests/fixtures/<name> into `scratch` and returns the copy's path (files made writable).
std::string CopyFixture(const std::string& name, const ScratchDir& scratch) {
  const fs::path dst = scratch.path() / name;
  fs::copy(fs::path(FixturesDir()) / name, dst, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(dst)) {
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  }
  return dst.string();
}

std::vector<uint8_t> ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::istreambuf_iterator<char> begin(in), end;
  return std::vector<uint8_t>(begin, end);
}

void WriteBytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

json ReadJson(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

// A safetensors image: 8-byte little-endian header length, the JSON header, then `data`.
std::vector<uint8_t> SafetensorsImage(const json& header, const std::vector<uint8_t>& data) {
  const std::string h = header.dump();
  std::vector<uint8_t> out(8 + h.size() + data.size());
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  std::copy(h.begin(), h.end(), out.begin() + 8);
  std::copy(data.begin(), data.end(), out.begin() + 8 + static_cast<int64_t>(h.size()));
  return out;
}

// One header entry with arbitrary (possibly invalid) offsets.
json Entry(const std::string& dtype, const std::vector<uint64_t>& shape, uint64_t begin, uint64_t end) {
  json e = json::object();
  e["dtype"] = dtype;
  e["shape"] = shape;
  e["data_offsets"] = json::array({begin, end});
  return e;
}

constexpr const char* kHandFile = "hand.safetensors";

StatusOr<SafetensorsHeader> ParseImage(const std::vector<uint8_t>& image) {
  return ParseSafetensorsHeader(image.data(), image.size(), kHandFile);
}

// Rewrites a parsed safetensors image without tensor `drop`: the remaining tensors are laid out
// contiguously (in name order) with recomputed offsets, so the result is a valid file.
std::vector<uint8_t> ImageWithout(const std::vector<uint8_t>& image, const SafetensorsHeader& h,
                                  const std::string& drop) {
  json header = json::object();
  if (!h.metadata.empty()) header["__metadata__"] = h.metadata;
  std::vector<uint8_t> data;
  for (const auto& [name, e] : h.tensors) {
    if (name == drop) continue;
    const uint64_t begin = data.size();
    const uint8_t* src = image.data() + h.data_offset + e.begin;
    data.insert(data.end(), src, src + (e.end - e.begin));
    std::vector<uint64_t> shape(e.shape.begin(), e.shape.end());
    header[name] = Entry(e.dtype_name, shape, begin, data.size());
  }
  return SafetensorsImage(header, data);
}

// ---- safetensors files on disk --------------------------------------------------------------------

// A download cut short: every truncation point (inside the length, the header, the data) is reported
// as truncation of that file.
TEST(ModelFilesTest, TruncatedSafetensorsNamesFileAndSaysTruncated) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
  const std::string file = (fs::path(dir) / "model.safetensors").string();
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().ToString();

  const uint64_t full = fs::file_size(file);
  // Sizes shrink each round, so one copy can be cut again and again.
  for (uint64_t size : {full - 100, uint64_t{8 + 100}, uint64_t{4}, uint64_t{0}}) {
    SCOPED_TRACE("truncated to " + std::to_string(size) + " bytes");
    fs::resize_file(file, size);
    auto opened = SafetensorsFile::Open(file);
    ASSERT_FALSE(opened.ok());
    EXPECT_TRUE(MessageHas(opened.status(), file));
    EXPECT_TRUE(MessageHas(opened.status(), "truncated"));
    auto weights = LoadModelWeights(*config, dir);
    ASSERT_FALSE(weights.ok());
    EXPECT_TRUE(MessageHas(weights.status(), file));
    EXPECT_TRUE(MessageHas(weights.status(), "truncated"));
  }
}

// A clone without `git lfs pull` leaves small text pointers where the weights should be.
TEST(ModelFilesTest, GitLfsPointerIsRecognised) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
  const std::string file = (fs::path(dir) / "model.safetensors").string();
  WriteText(file, "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto weights = LoadModelWeights(*config, dir);
  ASSERT_FALSE(weights.ok());
  EXPECT_TRUE(MessageHas(weights.status(), "git-LFS"));
  EXPECT_TRUE(MessageHas(weights.status(), file));
}

// ---- hand-built headers: offsets, sizes, overflow ------------------------------------------------

// Two tensors claiming the same bytes would alias each other's weights.
TEST(ModelFilesTest, OverlappingOffsetsNameTheTensor) {
  json h = json::object();
  h["w.first"] = Entry("F32", {4}, 0, 16);
  h["w.second"] = Entry("F32", {4}, 8, 24);
  auto r = ParseImage(SafetensorsImage(h, std::vector<uint8_t>(24)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), kHandFile));
  EXPECT_TRUE(MessageHas(r.status(), "w.second"));
  EXPECT_TRUE(MessageHas(r.status(), "overlap"));
}

// Offsets beyond the data section would read past the mapping.
TEST(ModelFilesTest, OffsetsPastTheDataSectionNameTheTensor) {
  json h = json::object();
  h["w.big"] = Entry("F32", {4}, 0, 16);
  auto r = ParseImage(SafetensorsImage(h, std::vector<uint8_t>(8)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), kHandFile));
  EXPECT_TRUE(MessageHas(r.status(), "w.big"));
  EXPECT_TRUE(MessageHas(r.status(), "past the data section"));

  // end < begin is rejected before any size arithmetic.
  json backwards = json::object();
  backwards["w.backwards"] = Entry("F32", {0}, 16, 0);
  r = ParseImage(SafetensorsImage(backwards, std::vector<uint8_t>(16)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "w.backwards"));
}

// The tensors must tile the data section: a gap (leading or between) or uncovered tail means a
// corrupt or hand-edited file.
TEST(ModelFilesTest, GapsInTheDataSectionAreRejected) {
  json between = json::object();
  between["w.a"] = Entry("F32", {4}, 0, 16);
  between["w.b"] = Entry("F32", {4}, 24, 40);
  auto r = ParseImage(SafetensorsImage(between, std::vector<uint8_t>(40)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "w.b"));
  EXPECT_TRUE(MessageHas(r.status(), "gap"));

  json leading = json::object();
  leading["w.late"] = Entry("F32", {4}, 8, 24);
  r = ParseImage(SafetensorsImage(leading, std::vector<uint8_t>(24)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "w.late"));
  EXPECT_TRUE(MessageHas(r.status(), "gap"));

  json tail = json::object();
  tail["w.a"] = Entry("F32", {4}, 0, 16);
  r = ParseImage(SafetensorsImage(tail, std::vector<uint8_t>(24)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), kHandFile));
  EXPECT_TRUE(MessageHas(r.status(), "data section"));
}

// shape × element size must equal the byte span, or views would read the wrong bytes.
TEST(ModelFilesTest, ShapeTimesDtypeMustMatchByteLength) {
  json h = json::object();
  h["w.odd"] = Entry("F32", {3}, 0, 16);  // 3 × 4 = 12 bytes, not 16
  auto r = ParseImage(SafetensorsImage(h, std::vector<uint8_t>(16)));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), kHandFile));
  EXPECT_TRUE(MessageHas(r.status(), "w.odd"));
  EXPECT_TRUE(MessageHas(r.status(), "12 bytes"));
}

// Shapes whose element or byte count overflows 64 bits must fail cleanly, not wrap around to a size
// that happens to match.
TEST(ModelFilesTest, OverflowingShapesAreRejected) {
  const std::vector<std::vector<uint64_t>> shapes = {
      {4294967296ull, 4294967296ull, 16},  // numel overflows
      {uint64_t{1} << 61},                 // numel fits, numel × 32 bits does not
      {uint64_t{1} << 63},                 // a dimension beyond int64
  };
  for (const auto& shape : shapes) {
    SCOPED_TRACE(json(shape).dump());
    json h = json::object();
    h["w.huge"] = Entry("F32", shape, 0, 0);
    auto r = ParseImage(SafetensorsImage(h, {}));
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(MessageHas(r.status(), "w.huge"));
    EXPECT_TRUE(MessageHas(r.status(), "overflows"));
  }
}

// The 8-byte length is untrusted: over the cap, or longer than the file, it is an error before any
// allocation or read.
TEST(ModelFilesTest, HeaderLengthOverCapOrPastEndIsRejected) {
  for (uint64_t n : {kSafetensorsMaxHeaderBytes + 1, ~uint64_t{0}}) {
    std::vector<uint8_t> image(8);
    for (int i = 0; i < 8; ++i) image[i] = static_cast<uint8_t>(n >> (8 * i));
    image.push_back('{');
    image.push_back('}');
    auto r = ParseImage(image);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_TRUE(MessageHas(r.status(), kHandFile));
    EXPECT_TRUE(MessageHas(r.status(), "limit"));
  }
  std::vector<uint8_t> image = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};  // claims 200 bytes, has 2
  auto r = ParseImage(image);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MessageHas(r.status(), "truncated"));
}

// Valid safetensors may hold dtypes shoal does not compute with; asking for one is Unimplemented and
// says which dtype, while the file and its other tensors stay usable.
TEST(ModelFilesTest, UnsupportedDtypeIsUnimplementedWhenRequested) {
  ScratchDir scratch;
  json h = json::object();
  h["position_ids"] = Entry("I64", {2}, 0, 16);
  h["w.ok"] = Entry("F32", {4}, 16, 32);
  const fs::path file = scratch.path() / "model.safetensors";
  WriteBytes(file, SafetensorsImage(h, std::vector<uint8_t>(32)));

  auto f = SafetensorsFile::Open(file.string());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto bad = (*f)->Tensor("position_ids");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnimplemented) << bad.status().ToString();
  EXPECT_TRUE(MessageHas(bad.status(), file.string()));
  EXPECT_TRUE(MessageHas(bad.status(), "position_ids"));
  EXPECT_TRUE(MessageHas(bad.status(), "I64"));
  auto good = (*f)->Tensor("w.ok");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(good->nbytes, 16u);
  auto absent = (*f)->Tensor("w.absent");
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(MessageHas(absent.status(), "w.absent"));

  // Through a Checkpoint the same: the I64 tensor is not loaded, and Get explains why.
  auto ck = Checkpoint::Open(scratch.path().string());
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  EXPECT_FALSE((*ck)->Has("position_ids"));
  auto via_ck = (*ck)->Get("position_ids");
  ASSERT_FALSE(via_ck.ok());
  EXPECT_EQ(via_ck.status().code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(MessageHas(via_ck.status(), "I64"));
  auto wrong_shape = (*ck)->Get("w.ok", {2, 2});
  ASSERT_FALSE(wrong_shape.ok());
  EXPECT_TRUE(MessageHas(wrong_shape.status(), "expected [2, 2]"));
}

// ---- checkpoint contents vs config.json ----------------------------------------------------------

// config.json and the weights disagree: the first tensor whose shape differs is named with both
// shapes, so the operator can tell which side is wrong.
TEST(ModelFilesTest, ShapeMismatchWithConfigNamesTensorAndExpectedShape) {
  struct Case {
    const char* key;
    int value;
    std::string tensor_suffix;  // after "model.layers.<first MoE layer>."
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"moe_intermediate_size", 48, "mlp.experts.0.gate_proj.weight", "expected [48, 64]"},
      {"num_experts", 12, "mlp.gate.weight", "expected [12, 64]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key);
    ScratchDir scratch;
    const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
    const fs::path config_path = fs::path(dir) / "config.json";
    json j = ReadJson(config_path);
    j[c.key] = c.value;
    WriteText(config_path, j.dump(2));

    auto config = LoadModelConfig(dir);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    int first_moe = -1;
    for (int l = 0; l < config->num_layers && first_moe < 0; ++l) {
      if (config->layer_is_moe[l]) first_moe = l;
    }
    ASSERT_GE(first_moe, 0);
    auto weights = LoadModelWeights(*config, dir);
    ASSERT_FALSE(weights.ok());
    EXPECT_EQ(weights.status().code(), StatusCode::kInvalidArgument) << weights.status().ToString();
    EXPECT_TRUE(MessageHas(weights.status(), "model.safetensors"));
    EXPECT_TRUE(MessageHas(weights.status(), "model.layers." + std::to_string(first_moe) + "." + c.tensor_suffix));
    EXPECT_TRUE(MessageHas(weights.status(), c.expected));
  }
}

// A tensor the config implies but the file lacks is named (NotFound), not silently zeroed.
TEST(ModelFilesTest, MissingTensorIsNamed) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
  const fs::path file = fs::path(dir) / "model.safetensors";
  const std::vector<uint8_t> image = ReadBytes(file);
  auto header = ParseSafetensorsHeader(image.data(), image.size(), file.string());
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  std::string drop;
  for (const auto& [name, _] : header->tensors) {
    if (name.find(".experts.") != std::string::npos) {
      drop = name;
      break;
    }
  }
  ASSERT_FALSE(drop.empty()) << "fixture has no expert tensors";

  const std::vector<uint8_t> rewritten = ImageWithout(image, *header, drop);
  auto check = ParseSafetensorsHeader(rewritten.data(), rewritten.size(), "rewritten");
  ASSERT_TRUE(check.ok()) << check.status().ToString();  // the helper itself wrote a valid file
  ASSERT_EQ(check->tensors.size() + 1, header->tensors.size());
  WriteBytes(file, rewritten);

  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto weights = LoadModelWeights(*config, dir);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), StatusCode::kNotFound) << weights.status().ToString();
  EXPECT_TRUE(MessageHas(weights.status(), "'" + drop + "'"));
  EXPECT_TRUE(MessageHas(weights.status(), dir));
}

// A shard listed in the index but absent on disk (an interrupted download) is named.
TEST(ModelFilesTest, MissingShardIsNamed) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-bf16", scratch);
  const std::string shard = "model-00002-of-00003.safetensors";
  ASSERT_TRUE(fs::remove(fs::path(dir) / shard));
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto weights = LoadModelWeights(*config, dir);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), StatusCode::kNotFound) << weights.status().ToString();
  EXPECT_TRUE(MessageHas(weights.status(), shard));
}

// The index is untrusted input: a shard name must be a plain file inside the checkpoint directory,
// so an index cannot make shoal map arbitrary files. A valid shard is planted at ../evil.safetensors
// to show it is refused, not merely absent.
TEST(ModelFilesTest, IndexShardOutsideCheckpointDirIsRejected) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-bf16", scratch);
  fs::copy_file(fs::path(dir) / "model-00003-of-00003.safetensors", scratch.path() / "evil.safetensors");
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const json original = ReadJson(index_path);
  const std::string key = original.at("weight_map").begin().key();
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().ToString();

  const std::vector<std::string> bad_names = {"../evil.safetensors", (scratch.path() / "evil.safetensors").string(),
                                              "sub/model.safetensors", ".."};
  for (const std::string& bad : bad_names) {
    SCOPED_TRACE(bad);
    json j = original;
    j["weight_map"][key] = bad;
    WriteText(index_path, j.dump(2));
    auto weights = LoadModelWeights(*config, dir);
    ASSERT_FALSE(weights.ok());
    EXPECT_EQ(weights.status().code(), StatusCode::kInvalidArgument) << weights.status().ToString();
    EXPECT_TRUE(MessageHas(weights.status(), "model.safetensors.index.json"));
    EXPECT_TRUE(MessageHas(weights.status(), "weight_map['" + key + "']"));
  }
}

// ---- config.json ---------------------------------------------------------------------------------

// Copies qwen3-moe-f32, applies `edit` to its config.json and returns LoadModelConfig's result.
template <class Edit>
StatusOr<ModelConfig> LoadEditedConfig(const ScratchDir& scratch, Edit edit) {
  const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
  const fs::path path = fs::path(dir) / "config.json";
  json j = ReadJson(path);
  edit(j);
  WriteText(path, j.dump(2));
  return LoadModelConfig(dir);
}

// A model shoal cannot compute is refused up front, listing what it can.
TEST(ModelFilesTest, UnsupportedArchitectureListsSupportedOnes) {
  ScratchDir scratch;
  auto r = LoadEditedConfig(scratch, [](json& j) { j["architectures"] = json::array({"LlamaForCausalLM"}); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "config.json"));
  EXPECT_TRUE(MessageHas(r.status(), "LlamaForCausalLM"));
  for (const char* a : {"MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"}) {
    EXPECT_TRUE(MessageHas(r.status(), a));
  }
}

TEST(ModelFilesTest, MalformedConfigJsonNamesFile) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
  const fs::path path = fs::path(dir) / "config.json";
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  WriteText(path, text.substr(0, text.size() / 2));  // cut mid-object
  auto r = LoadModelConfig(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), path.string()));
  EXPECT_TRUE(MessageHas(r.status(), "malformed"));
}

TEST(ModelFilesTest, MissingConfigJsonIsNotFound) {
  ScratchDir scratch;
  const std::string dir = CopyFixture("qwen3-moe-f32", scratch);
  ASSERT_TRUE(fs::remove(fs::path(dir) / "config.json"));
  auto r = LoadModelConfig(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "config.json"));
}

// A value of the wrong JSON type is named by field, never coerced (a string "64" is not 64).
TEST(ModelFilesTest, WrongFieldTypeNamesTheField) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"hidden_size", "64"},
      {"num_experts", 2.5},
      {"norm_topk_prob", "yes"},
      {"rope_scaling", 5},
  };
  for (const auto& c : cases) {
    const std::string& key = c.first;
    SCOPED_TRACE(key);
    ScratchDir scratch;
    auto r = LoadEditedConfig(scratch, [&](json& j) { j[key] = c.second; });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_TRUE(MessageHas(r.status(), "config.json"));
    EXPECT_TRUE(MessageHas(r.status(), "'" + key + "'"));
  }
}

// A RoPE variant shoal does not implement would silently change the maths; it must be refused.
TEST(ModelFilesTest, UnsupportedRopeTypeIsUnimplemented) {
  ScratchDir scratch;
  auto r = LoadEditedConfig(scratch, [](json& j) {
    j["rope_scaling"] = json::parse(R"({"rope_type": "longrope", "factor": 2.0})");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status().ToString();
  EXPECT_TRUE(MessageHas(r.status(), "config.json"));
  EXPECT_TRUE(MessageHas(r.status(), "longrope"));
}

// ---- config.json as transformers 4 and 5 write it -----------------------------------------------

// What the engine computes with, compared field by field (a printed difference names the field).
std::string Describe(const ModelConfig& c) {
  std::ostringstream o;
  o << "arch " << ArchitectureName(c.arch) << " vocab " << c.vocab_size << " hidden " << c.hidden_size << " layers "
    << c.num_layers << " heads " << c.num_heads << "/" << c.num_kv_heads << " head_dim " << c.head_dim << " max_pos "
    << c.max_position_embeddings << " eps " << c.rms_norm_eps << " tie " << c.tie_word_embeddings << " bias "
    << c.qkv_bias << c.o_bias << " qk_norm " << c.qk_norm << " window " << c.sliding_window << " rope "
    << static_cast<int>(c.rope.type) << "/" << c.rope.theta << "/" << c.rope.factor << "/" << c.rope.beta_fast << "/"
    << c.rope.beta_slow << "/" << c.rope.attention_factor << "/" << c.rope.original_max_position_embeddings << "/"
    << c.rope.low_freq_factor << "/" << c.rope.high_freq_factor << " experts " << c.num_experts << " top "
    << c.num_experts_per_tok << " moe_inter " << c.moe_intermediate_size << " inter " << c.intermediate_size
    << " shared " << c.shared_expert_intermediate_size << " norm_topk " << c.norm_topk_prob << " dtype "
    << static_cast<int>(c.torch_dtype) << " moe layers";
  for (bool m : c.layer_is_moe) o << m;
  return o.str();
}

// transformers 5's spellings of a transformers-4 config.json: the expert count as num_local_experts,
// RoPE in rope_parameters (theta inside), dtype for torch_dtype, head_dim null when it is the
// default, layer_types listing each layer's attention. Each one alone, then all together.
std::vector<std::pair<std::string, std::function<void(json&)>>> Transformers5Spellings() {
  return {
      {"num_local_experts",
       [](json& j) {
         if (j.contains("num_experts")) j["num_local_experts"] = j["num_experts"], j.erase("num_experts");
       }},
      {"rope_parameters",
       [](json& j) {
         json rp = j.contains("rope_scaling") && !j["rope_scaling"].is_null() ? j["rope_scaling"]
                                                                               : json{{"rope_type", "default"}};
         rp["rope_theta"] = j.value("rope_theta", 10000.0);
         j.erase("rope_scaling");
         j.erase("rope_theta");
         j["rope_parameters"] = rp;
       }},
      {"dtype",
       [](json& j) {
         if (j.contains("torch_dtype")) j["dtype"] = j["torch_dtype"], j.erase("torch_dtype");
       }},
      {"head_dim null",
       [](json& j) {
         if (j.contains("head_dim") && j["head_dim"].is_number_integer() &&
             j["head_dim"].get<int>() == j["hidden_size"].get<int>() / j["num_attention_heads"].get<int>()) {
           j["head_dim"] = nullptr;
         }
       }},
      {"layer_types",
       [](json& j) {
         const bool sliding = j.value("use_sliding_window", false) ||
                              (j.value("architectures", json::array()).at(0) == "MixtralForCausalLM" &&
                               j.contains("sliding_window") && !j["sliding_window"].is_null());
         j["layer_types"] = json::array();
         for (int l = 0; l < j["num_hidden_layers"].get<int>(); ++l) {
           j["layer_types"].push_back(sliding ? "sliding_attention" : "full_attention");
         }
       }},
  };
}

TEST(ModelFilesTest, Transformers5SpellingsParseLikeTransformers4) {
  for (const char* fixture : {"mixtral-top1-f32", "mixtral-bf16", "qwen2-moe-f32", "qwen3-moe-f32"}) {
    const std::string text = ReadJson(fs::path(FixturesDir()) / fixture / "config.json").dump();
    auto v4 = ParseModelConfig(text, std::string(fixture) + "/config.json");
    ASSERT_TRUE(v4.ok()) << v4.status().ToString();
    json all = json::parse(text);
    for (const auto& [name, rewrite] : Transformers5Spellings()) {
      SCOPED_TRACE(std::string(fixture) + ", " + name);
      json one = json::parse(text);
      rewrite(one);
      rewrite(all);
      auto v5 = ParseModelConfig(one.dump(), "config.json");
      ASSERT_TRUE(v5.ok()) << v5.status().ToString();
      EXPECT_EQ(Describe(*v5), Describe(*v4));
    }
    SCOPED_TRACE(std::string(fixture) + ", every transformers-5 spelling");
    auto v5 = ParseModelConfig(all.dump(), "config.json");
    ASSERT_TRUE(v5.ok()) << v5.status().ToString();
    EXPECT_EQ(Describe(*v5), Describe(*v4));
  }
}

// The two names of the expert count must agree when both are written; attention kinds that differ
// by layer are refused rather than computed as one kind; a wrong-length list is malformed.
TEST(ModelFilesTest, Transformers5SpellingsThatContradictAreRefused) {
  {
    ScratchDir scratch;
    auto r = LoadEditedConfig(scratch, [](json& j) { j["num_local_experts"] = 12; });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_TRUE(MessageHas(r.status(), "'num_experts' (10)"));
    EXPECT_TRUE(MessageHas(r.status(), "'num_local_experts' (12)"));
  }
  {
    ScratchDir scratch;
    auto r = LoadEditedConfig(scratch, [](json& j) { j["num_local_experts"] = 10; });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->num_experts, 10);
  }
  {
    ScratchDir scratch;
    auto r = LoadEditedConfig(scratch, [](json& j) {
      j["layer_types"] = json::array({"full_attention", "sliding_attention", "full_attention"});
    });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status().ToString();
    EXPECT_TRUE(MessageHas(r.status(), "'layer_types': layer 1 is 'sliding_attention'"));
  }
  {
    ScratchDir scratch;
    auto r = LoadEditedConfig(scratch, [](json& j) { j["layer_types"] = json::array({"full_attention"}); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_TRUE(MessageHas(r.status(), "1 entries for 3 layers"));
  }
}

// ---- partial (expert-parallel) loads -------------------------------------------------------------

// A rank that holds only some experts loads exactly those: the rest are !present(), their bytes are
// neither counted nor mapped into the checkpoint's table.
TEST(ModelFilesTest, ExpertFilterLoadsOnlyChosenExperts) {
  const std::string dir = FixturesDir() + "/qwen3-moe-f32";  // read-only use: no copy needed
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto full = LoadModelWeights(*config, dir);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  auto partial = LoadModelWeights(*config, dir, [](int /*layer*/, int expert) { return expert % 2 == 0; });
  ASSERT_TRUE(partial.ok()) << partial.status().ToString();

  size_t odd_bytes = 0;
  int moe_layers = 0;
  ASSERT_EQ(partial->layers.size(), full->layers.size());
  for (size_t l = 0; l < full->layers.size(); ++l) {
    const LayerWeights& fl = full->layers[l];
    const LayerWeights& pl = partial->layers[l];
    ASSERT_EQ(pl.is_moe, fl.is_moe);
    if (!fl.is_moe) continue;
    ++moe_layers;
    ASSERT_EQ(pl.experts.size(), static_cast<size_t>(config->num_experts));
    for (size_t e = 0; e < fl.experts.size(); ++e) {
      ASSERT_TRUE(fl.experts[e].present());
      if (e % 2 == 1) {
        EXPECT_FALSE(pl.experts[e].present()) << "layer " << l << " expert " << e;
        odd_bytes += fl.experts[e].nbytes();
      } else {
        EXPECT_TRUE(pl.experts[e].present()) << "layer " << l << " expert " << e;
        EXPECT_EQ(pl.experts[e].nbytes(), fl.experts[e].nbytes());
      }
    }
    EXPECT_FALSE(pl.router.empty());  // dense parts of a MoE layer are always loaded
  }
  ASSERT_GT(moe_layers, 0);
  ASSERT_GT(odd_bytes, 0u);
  EXPECT_EQ(partial->MatrixBytes(), full->MatrixBytes() - odd_bytes);
  ASSERT_TRUE(full->checkpoint && partial->checkpoint);
  EXPECT_LT(partial->checkpoint->LoadedBytes(), full->checkpoint->LoadedBytes());
  EXPECT_EQ(partial->checkpoint->LoadedBytes(), full->checkpoint->LoadedBytes() - odd_bytes);
  int first_moe = 0;
  while (!config->layer_is_moe[first_moe]) ++first_moe;
  const std::string odd = "model.layers." + std::to_string(first_moe) + ".mlp.experts.1.gate_proj.weight";
  EXPECT_TRUE(full->checkpoint->Has(odd));
  EXPECT_FALSE(partial->checkpoint->Has(odd));
}

}  // namespace
}  // namespace shoal::testing
