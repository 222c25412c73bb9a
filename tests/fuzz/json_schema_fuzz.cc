// libFuzzer target: a request's JSON schema (tool parameters) through the compiler, then a walk under
// the token mask it gives. Input: the schema text, a NUL byte, then bytes that pick the walk's tokens.
// The compiler must answer any bytes with a grammar or a Status, never crash; the mask must never
// leave the walk without a token to take; and every text the matcher calls whole must be JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "grammar/json_schema.h"
#include "grammar/token_constraint.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

const std::shared_ptr<const shoal::grammar::TokenVocabulary>& Vocabulary() {
  static const auto v = [] {
    std::vector<std::string> bytes = {""};  // token 0: the stop token
    for (int c = 0x09; c < 0x7F; ++c) bytes.push_back(std::string(1, static_cast<char>(c)));
    for (const char* t : {"{\"", "\":", "\", \"", "\"}", "true", "false", "null", "12", "-0.5e+3", "\\u00e9",
                          "\xC3\xA9", "\xE6\x97\xA5", "\xE6", "\x97\xA5", "\"]", "},{", "[{\"", "  ", "\n  "}) {
      bytes.push_back(t);
    }
    return std::make_shared<const shoal::grammar::TokenVocabulary>(std::move(bytes));
  }();
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string_view schema = in.substr(0, nul);
  const std::string_view walk = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
  auto g = shoal::grammar::CompileJsonSchema(schema, "schema");
  if (!g.ok()) {
    Check(!g.status().message().empty());
    return 0;
  }
  const auto& vocab = Vocabulary();
  shoal::grammar::TokenConstraint c(*g, vocab);
  std::string text;
  std::vector<uint8_t> allowed;
  const std::vector<int32_t> stop = {0};
  for (size_t i = 0; i < walk.size() && i < 256; ++i) {
    c.Allowed(stop, vocab->size(), &allowed);
    std::vector<int32_t> choices;
    for (int32_t t = 0; t < vocab->size(); ++t) {
      if (allowed[static_cast<size_t>(t)]) choices.push_back(t);
    }
    Check(!choices.empty());  // every prefix the matcher keeps can go on or end
    const int32_t t = choices[static_cast<uint8_t>(walk[i]) % choices.size()];
    if (t == 0) {
      Check(c.complete());
      Check(nlohmann::json::accept(text));
      return 0;
    }
    Check(c.Accept(t));
    text += vocab->bytes(t);
  }
  if (c.complete()) Check(nlohmann::json::accept(text));
  return 0;
}
