// libFuzzer target: the Jinja chat-template interpreter must turn any byte string into either a
// rendered prompt or a Status — no crash, no unbounded recursion, memory or time — when parsed as a
// template and rendered over a small fixed conversation. Run by scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "model/jinja/template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json kContext = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "sys"},
      {"role": "user", "content": [{"type": "text", "text": "héllo 🙂"}]},
      {"role": "assistant", "content": "<think>x</think>y", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": [true, null, 2.5]}}}]},
      {"role": "tool", "content": "{\"ok\": true}"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false
  })");
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto t = shoal::jinja::Template::Parse(source, "fuzz.jinja");
  if (!t.ok()) {
    if (t.status().message().empty()) std::abort();  // every error must say something
    return 0;
  }
  shoal::jinja::RenderLimits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_loop_iterations = 20000;
  auto out = (*t)->Render(kContext, limits);
  if (out.ok() && out->size() > limits.max_output_bytes) std::abort();
  if (!out.ok() && out.status().message().empty()) std::abort();
  return 0;
}
