#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

namespace shoal {

namespace {

namespace fs = std::filesystem;

// Prefix "file:line: key" for a node (yaml-cpp lines are 0-based).
std::string Where(const std::string& source, const YAML::Node& node, const std::string& key) {
  std::ostringstream os;
  os << source;
  if (node.Mark().line >= 0) os << ":" << node.Mark().line + 1;
  os << ": " << key;
  return os.str();
}

// Walks one mapping: every key must be known; each known key's handler converts and checks it.
using Handler = std::function<Status(const YAML::Node& value, const std::string& where)>;

Status ReadMapping(const YAML::Node& map, const std::string& source, const std::string& prefix,
                   const std::map<std::string, Handler>& handlers) {
  if (!map.IsMap()) {
    return InvalidArgument(Where(source, map, prefix) + ": expected a mapping");
  }
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    const std::string full = prefix.empty() ? key : prefix + "." + key;
    auto it = handlers.find(key);
    if (it == handlers.end()) {
      std::string known;
      for (const auto& [k, _] : handlers) known += (known.empty() ? "" : ", ") + k;
      return InvalidArgument(Where(source, kv.first, full) + ": unknown key (known: " + known + ")");
    }
    SHOAL_RETURN_IF_ERROR(it->second(kv.second, Where(source, kv.second, full)));
  }
  return Status::Ok();
}

template <class T>
Status ReadScalar(const YAML::Node& v, const std::string& where, T* out, const char* type_name) {
  if (!v.IsScalar()) return InvalidArgument(where + ": expected " + type_name);
  try {
    *out = v.as<T>();
  } catch (const YAML::Exception&) {
    return InvalidArgument(where + ": expected " + type_name + ", got '" + v.Scalar() + "'");
  }
  return Status::Ok();
}

template <class T>
Handler IntIn(T* out, T lo, T hi, std::function<bool(T)> extra = nullptr, const char* extra_what = "") {
  return [=](const YAML::Node& v, const std::string& where) -> Status {
    T x{};
    SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &x, "an integer"));
    if (x < lo || x > hi || (extra && !extra(x))) {
      return OutOfRange(where + ": must be " + extra_what + "in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "], got " + std::to_string(x));
    }
    *out = x;
    return Status::Ok();
  };
}

// A number in [lo, hi].
Handler NumberIn(double* out, double lo, double hi) {
  return [=](const YAML::Node& v, const std::string& where) -> Status {
    double x = 0;
    SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &x, "a number"));
    if (!(x >= lo && x <= hi)) return OutOfRange(where + ": must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v.Scalar());
    *out = x;
    return Status::Ok();
  };
}

}  // namespace

std::string ServedModelName(const EngineConfig& cfg) {
  if (!cfg.model_name.empty()) return cfg.model_name;
  fs::path p = fs::path(cfg.model_path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

int EngineConfig::ResolvedThreads() const {
  if (threads > 0) return threads;
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

StatusOr<DeviceSpec> ParseDevice(const std::string& text) {
  if (text == "cpu") return DeviceSpec{};
  if (text == "cuda") return DeviceSpec{true, -1};
  if (text.rfind("cuda:", 0) == 0) {
    const std::string n = text.substr(5);
    if (!n.empty() && n.size() <= 3 && n.find_first_not_of("0123456789") == std::string::npos) {
      return DeviceSpec{true, std::stoi(n)};
    }
  }
  return InvalidArgument("expected cpu, cuda or cuda:N, got '" + text + "'");
}

StatusOr<std::optional<DType>> ParseWeightDtype(const std::string& text) {
  if (text == "auto") return std::optional<DType>();
  if (text == "bfloat16" || text == "bf16") return std::optional<DType>(DType::kBF16);
  if (text == "float16" || text == "fp16" || text == "half") return std::optional<DType>(DType::kF16);
  if (text == "float32" || text == "fp32" || text == "float") return std::optional<DType>(DType::kF32);
  return InvalidArgument("expected auto, bfloat16, float16 or float32, got '" + text + "'");
}

StatusOr<EngineConfig> ParseEngineConfig(const std::string& yaml_text, const std::string& source,
                                         const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return InvalidArgument(source + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  EngineConfig cfg;
  cfg.source = source;
  if (root.IsNull()) return cfg;  // an empty file means every default

  std::string model_path;
  Status st = ReadMapping(
      root, source, "",
      {
          {"model",
           [&](const YAML::Node& m, const std::string&) {
             return ReadMapping(m, source, "model",
                                {{"path", [&](const YAML::Node& v, const std::string& where) {
                                    SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &model_path, "a path"));
                                    fs::path p(model_path);
                                    if (p.is_relative() && !base_dir.empty()) p = fs::path(base_dir) / p;
                                    std::error_code ec;
                                    if (!fs::is_directory(p, ec)) {
                                      return NotFound(where + ": model directory '" + p.string() +
                                                      "' does not exist");
                                    }
                                    cfg.model_path = p.lexically_normal().string();
                                    return Status::Ok();
                                  }},
                                 {"name", [&](const YAML::Node& v, const std::string& where) {
                                    SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &cfg.model_name, "a string"));
                                    if (cfg.model_name.empty() || cfg.model_name.size() > 256) {
                                      return InvalidArgument(where + ": must be 1 to 256 characters");
                                    }
                                    return Status::Ok();
                                  }}});
           }},
          {"engine",
           [&](const YAML::Node& m, const std::string&) {
             return ReadMapping(m, source, "engine",
                                {{"threads", IntIn<int>(&cfg.threads, 0, 1024)},
                                 {"max_num_seqs", IntIn<int>(&cfg.max_num_seqs, 1, 65536)},
                                 {"max_step_tokens", IntIn<int>(&cfg.max_step_tokens, 1, 1 << 24)},
                                 {"device", [&](const YAML::Node& v, const std::string& where) {
                                    SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &cfg.device, "a string"));
                                    return ParseDevice(cfg.device).status().WithContext(where);
                                  }},
                                 {"max_model_len", IntIn<int64_t>(&cfg.max_model_len, 0, int64_t{1} << 26)},
                                 {"dtype", [&](const YAML::Node& v, const std::string& where) {
                                    SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &cfg.dtype, "a string"));
                                    return ParseWeightDtype(cfg.dtype).status().WithContext(where);
                                  }},
                                 {"experimental_gpu_kernels", [&](const YAML::Node& v, const std::string& where) {
                                    return ReadScalar(v, where, &cfg.experimental_gpu_kernels, "true or false");
                                  }}});
           }},
          {"kv_cache",
           [&](const YAML::Node& m, const std::string&) {
             return ReadMapping(
                 m, source, "kv_cache",
                 {{"block_size", IntIn<int>(&cfg.kv_block_size, 1, 1024, [](int x) { return (x & (x - 1)) == 0; },
                                            "a power of two ")},
                  {"memory_mib", IntIn<int64_t>(&cfg.kv_cache_mib, 1, int64_t{1} << 30)},
                  {"num_blocks", IntIn<int64_t>(&cfg.kv_cache_blocks, 0, int64_t{1} << 32)},
                  {"memory_fraction", [&](const YAML::Node& v, const std::string& where) -> Status {
                     double f = 0;
                     SHOAL_RETURN_IF_ERROR(ReadScalar(v, where, &f, "a number"));
                     if (!(f >= 0 && f <= 1)) return OutOfRange(where + ": must be in [0, 1], got " + v.Scalar());
                     cfg.kv_memory_fraction = f;
                     return Status::Ok();
                   }}});
           }},
          {"server",
           [&](const YAML::Node& m, const std::string&) {
             auto& sv = cfg.server;
             return ReadMapping(
                 m, source, "server",
                 {{"host", [&](const YAML::Node& v, const std::string& w) { return ReadScalar(v, w, &sv.host, "an address"); }},
                  {"port", IntIn<int>(&sv.port, 0, 65535)},
                  {"control_host",
                   [&](const YAML::Node& v, const std::string& w) { return ReadScalar(v, w, &sv.control_host, "an address"); }},
                  {"control_port", IntIn<int>(&sv.control_port, 0, 65535)},
                  {"control_token",
                   [&](const YAML::Node& v, const std::string& w) -> Status {
                     SHOAL_RETURN_IF_ERROR(ReadScalar(v, w, &sv.control_token, "a string"));
                     if (sv.control_token.size() > 256) return InvalidArgument(w + ": longer than 256 characters");
                     return Status::Ok();
                   }},
                  {"api_keys",
                   [&](const YAML::Node& v, const std::string& w) -> Status {
                     if (!v.IsSequence()) return InvalidArgument(w + ": expected a list of strings");
                     for (const auto& k : v) {
                       std::string key;
                       SHOAL_RETURN_IF_ERROR(ReadScalar(k, w, &key, "a string"));
                       if (key.empty()) return InvalidArgument(w + ": an empty key");
                       sv.api_keys.push_back(key);
                     }
                     return Status::Ok();
                   }},
                  {"max_body_bytes", IntIn<int64_t>(&sv.max_body_bytes, 1024, int64_t{1} << 30)},
                  {"max_queued_requests", IntIn<int>(&sv.max_queued_requests, 0, 1 << 20)},
                  {"heartbeat_ms", IntIn<int>(&sv.heartbeat_ms, 10, 60000)},
                  {"heartbeat_timeout_ms", IntIn<int>(&sv.heartbeat_timeout_ms, 100, 3600 * 1000)},
                  {"step_timeout_ms", IntIn<int>(&sv.step_timeout_ms, 100, 24 * 3600 * 1000)},
                  {"max_connections", IntIn<int>(&sv.max_connections, 1, 1 << 20)},
                  {"max_control_connections", IntIn<int>(&sv.max_control_connections, 1, 1 << 20)},
                  {"keepalive_timeout_s", IntIn<int>(&sv.keepalive_timeout_s, 1, 3600)},
                  {"request_timeout_s", IntIn<int>(&sv.request_timeout_s, 0, 7 * 24 * 3600)},
                  {"group_forget_s", IntIn<int>(&sv.group_forget_s, 1, 7 * 24 * 3600)},
                  {"expert_load_window_s", IntIn<int>(&sv.expert_load_window_s, 1, 24 * 3600)},
                  {"rebalance_threshold", NumberIn(&sv.rebalance_threshold, 0, 1000)},
                  {"rebalance_interval_s", IntIn<int>(&sv.rebalance_interval_s, 1, 7 * 24 * 3600)},
                  {"rebalance_min_tokens", IntIn<int64_t>(&sv.rebalance_min_tokens, 1, int64_t{1} << 50)},
                  {"rebalance_min_gain", NumberIn(&sv.rebalance_min_gain, 0, 1)},
                  {"migration_timeout_s", IntIn<int>(&sv.migration_timeout_s, 0, 24 * 3600)},
                  {"http_threads", IntIn<int>(&sv.http_threads, 0, 256)},
                  {"text_threads", IntIn<int>(&sv.text_threads, 0, 256)},
                  {"metrics_vllm_names", [&](const YAML::Node& v, const std::string& w) {
                     return ReadScalar(v, w, &sv.metrics_vllm_names, "true or false");
                   }},
                  {"generation_config", [&](const YAML::Node& v, const std::string& w) -> Status {
                     SHOAL_RETURN_IF_ERROR(ReadScalar(v, w, &sv.generation_config, "auto or vllm"));
                     if (sv.generation_config != "auto" && sv.generation_config != "vllm") {
                       return InvalidArgument(w + ": expected auto (the model's generation_config.json "
                                                  "defaults) or vllm (none), got '" + sv.generation_config + "'");
                     }
                     return Status::Ok();
                   }},
                  {"tool_parser", [&](const YAML::Node& v, const std::string& w) -> Status {
                     SHOAL_RETURN_IF_ERROR(ReadScalar(v, w, &sv.tool_parser, "a tool-call parser name"));
                     for (const char* ok : {"auto", "none", "hermes", "mistral", "llama3_json", "deepseek_v3"}) {
                       if (sv.tool_parser == ok) return Status::Ok();
                     }
                     return InvalidArgument(w + ": expected auto, none, hermes, mistral, llama3_json or deepseek_v3, got '" +
                                            sv.tool_parser + "'");
                   }},
                  {"reasoning_parser", [&](const YAML::Node& v, const std::string& w) -> Status {
                     SHOAL_RETURN_IF_ERROR(ReadScalar(v, w, &sv.reasoning_parser, "none, qwen3 or deepseek_r1"));
                     if (sv.reasoning_parser == "none") sv.reasoning_parser.clear();
                     if (!sv.reasoning_parser.empty() && sv.reasoning_parser != "qwen3" &&
                         sv.reasoning_parser != "deepseek_r1") {
                       return InvalidArgument(w + ": expected none, qwen3 or deepseek_r1, got '" +
                                              sv.reasoning_parser + "'");
                     }
                     return Status::Ok();
                   }}});
           }},
          {"cluster",
           [&](const YAML::Node& m, const std::string&) {
             return ReadMapping(m, source, "cluster",
                                {{"groups", IntIn<int>(&cfg.cluster.groups, 1, 64)},
                                 {"ranks_per_group", IntIn<int>(&cfg.cluster.ranks_per_group, 1, 1024)},
                                 {"max_restarts", IntIn<int>(&cfg.cluster.max_restarts, 0, 1000)},
                                 {"restart_window_s", IntIn<int>(&cfg.cluster.restart_window_s, 1, 7 * 24 * 3600)}});
           }},
          {"parallel",
           [&](const YAML::Node& m, const std::string&) {
             return ReadMapping(m, source, "parallel",
                                {{"collective_timeout_ms",
                                  IntIn<int64_t>(&cfg.collective_timeout_ms, 1, int64_t{24} * 3600 * 1000)},
                                 {"startup_timeout_s", IntIn<int64_t>(&cfg.startup_timeout_s, 1, 24 * 3600)},
                                 {"attention_tp", IntIn<int>(&cfg.attention_tp, 1, 1024)},
                                 {"redundant_experts", IntIn<int>(&cfg.redundant_experts, 0, 1 << 16)},
                                 {"shared_memory_exchange", [&](const YAML::Node& v, const std::string& w) {
                                    return ReadScalar(v, w, &cfg.shared_memory_exchange, "true or false");
                                  }}});
           }},
      });
  if (!st.ok()) return st;
  if (cfg.server.heartbeat_timeout_ms < 2 * cfg.server.heartbeat_ms) {
    return InvalidArgument(source + ": server.heartbeat_timeout_ms must be at least twice server.heartbeat_ms");
  }
  return cfg;
}

StatusOr<EngineConfig> LoadEngineConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseEngineConfig(ss.str(), path, fs::path(path).parent_path().string());
}

std::string EngineConfigYaml(const EngineConfig& c) {
  YAML::Emitter y;
  y.SetDoublePrecision(15);  // 0.9 prints as 0.9
  y << YAML::BeginMap;
  y << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  if (!c.model_path.empty()) y << YAML::Key << "path" << YAML::Value << c.model_path;
  if (!c.model_name.empty()) y << YAML::Key << "name" << YAML::Value << c.model_name;
  y << YAML::EndMap;
  y << YAML::Key << "engine" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "threads" << YAML::Value << c.threads;
  y << YAML::Key << "max_num_seqs" << YAML::Value << c.max_num_seqs;
  y << YAML::Key << "max_step_tokens" << YAML::Value << c.max_step_tokens;
  y << YAML::Key << "max_model_len" << YAML::Value << c.max_model_len;
  y << YAML::Key << "dtype" << YAML::Value << c.dtype;
  y << YAML::Key << "device" << YAML::Value << c.device;
  y << YAML::Key << "experimental_gpu_kernels" << YAML::Value << c.experimental_gpu_kernels;
  y << YAML::EndMap;
  y << YAML::Key << "kv_cache" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "block_size" << YAML::Value << c.kv_block_size;
  y << YAML::Key << "memory_mib" << YAML::Value << c.kv_cache_mib;
  y << YAML::Key << "num_blocks" << YAML::Value << c.kv_cache_blocks;
  y << YAML::Key << "memory_fraction" << YAML::Value << c.kv_memory_fraction;
  y << YAML::EndMap;
  const auto& s = c.server;
  y << YAML::Key << "server" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "host" << YAML::Value << s.host;
  y << YAML::Key << "port" << YAML::Value << s.port;
  y << YAML::Key << "control_host" << YAML::Value << s.control_host;
  y << YAML::Key << "control_port" << YAML::Value << s.control_port;
  // Secrets are never printed: only whether one is set.
  y << YAML::Key << "control_token" << YAML::Value << (s.control_token.empty() ? "" : "<set>");
  y << YAML::Key << "api_keys" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (size_t i = 0; i < s.api_keys.size(); ++i) y << "<set>";
  y << YAML::EndSeq;
  y << YAML::Key << "max_body_bytes" << YAML::Value << s.max_body_bytes;
  y << YAML::Key << "max_queued_requests" << YAML::Value << s.max_queued_requests;
  y << YAML::Key << "heartbeat_ms" << YAML::Value << s.heartbeat_ms;
  y << YAML::Key << "heartbeat_timeout_ms" << YAML::Value << s.heartbeat_timeout_ms;
  y << YAML::Key << "step_timeout_ms" << YAML::Value << s.step_timeout_ms;
  y << YAML::Key << "max_connections" << YAML::Value << s.max_connections;
  y << YAML::Key << "max_control_connections" << YAML::Value << s.max_control_connections;
  y << YAML::Key << "keepalive_timeout_s" << YAML::Value << s.keepalive_timeout_s;
  y << YAML::Key << "request_timeout_s" << YAML::Value << s.request_timeout_s;
  y << YAML::Key << "group_forget_s" << YAML::Value << s.group_forget_s;
  y << YAML::Key << "expert_load_window_s" << YAML::Value << s.expert_load_window_s;
  y << YAML::Key << "rebalance_threshold" << YAML::Value << s.rebalance_threshold;
  y << YAML::Key << "rebalance_interval_s" << YAML::Value << s.rebalance_interval_s;
  y << YAML::Key << "rebalance_min_tokens" << YAML::Value << s.rebalance_min_tokens;
  y << YAML::Key << "rebalance_min_gain" << YAML::Value << s.rebalance_min_gain;
  y << YAML::Key << "migration_timeout_s" << YAML::Value << s.migration_timeout_s;
  y << YAML::Key << "http_threads" << YAML::Value << s.http_threads;
  y << YAML::Key << "text_threads" << YAML::Value << s.text_threads;
  y << YAML::Key << "metrics_vllm_names" << YAML::Value << s.metrics_vllm_names;
  y << YAML::Key << "generation_config" << YAML::Value << s.generation_config;
  y << YAML::Key << "tool_parser" << YAML::Value << s.tool_parser;
  y << YAML::Key << "reasoning_parser" << YAML::Value << (s.reasoning_parser.empty() ? "none" : s.reasoning_parser);
  y << YAML::EndMap;
  y << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "groups" << YAML::Value << c.cluster.groups;
  y << YAML::Key << "ranks_per_group" << YAML::Value << c.cluster.ranks_per_group;
  y << YAML::Key << "max_restarts" << YAML::Value << c.cluster.max_restarts;
  y << YAML::Key << "restart_window_s" << YAML::Value << c.cluster.restart_window_s;
  y << YAML::EndMap;
  y << YAML::Key << "parallel" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "collective_timeout_ms" << YAML::Value << c.collective_timeout_ms;
  y << YAML::Key << "startup_timeout_s" << YAML::Value << c.startup_timeout_s;
  y << YAML::Key << "attention_tp" << YAML::Value << c.attention_tp;
  y << YAML::Key << "redundant_experts" << YAML::Value << c.redundant_experts;
  y << YAML::Key << "shared_memory_exchange" << YAML::Value << c.shared_memory_exchange;
  y << YAML::EndMap;
  y << YAML::EndMap;
  return std::string(y.c_str()) + "\n";
}

}  // namespace shoal
