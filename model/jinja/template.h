// A Jinja2 template interpreter for Hugging Face chat templates.
//
// Implements the subset of jinja2 that chat templates use, with the environment transformers sets up in
// apply_chat_template (utils/chat_template_utils.py): trim_blocks and lstrip_blocks on, loop controls
// (break/continue), the globals raise_exception(msg) and strftime_now(fmt), and a tojson filter that is
// json.dumps(x, ensure_ascii=False, indent=indent). Rendering matches transformers byte for byte for the
// templates in tests/fixtures/chat_templates.
//
// Supported: {{ }}, {% %}, {# #}, `-`/`+` whitespace control, {% raw %}; if/elif/else, for (tuple
// targets, `if` filter, else, loop.*, break/continue), set (incl. namespace attributes and block set),
// macro, filter blocks, {% generation %} (rendered in place); Python-like values and operators; the
// common filters, tests and str/dict methods (model/jinja/builtins.h). Not supported: include/import/
// extends/block/call, recursive loops, printf-style '%' on strings.
//
// Both the template and the context are untrusted: parsing and rendering never crash and bound nesting
// (kMaxDepth), output size (RenderLimits) and loop iterations, failing with a Status instead. Values are
// bounded too (value.h): a namespace that holds itself prints as Python prints it and is freed when
// the render ends; printing or comparing a value nested deeper than kMaxValueDepth, or printing more
// than kMaxValueBytes of it, is ResourceExhausted. Errors read "<template name>:<line>: <construct>:
// <message>", with jinja2's message where jinja2 has one (raise_exception's text verbatim).
//
// Thread-safety: a parsed Template is immutable; Render may run concurrently from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace shoal::jinja {

struct ParsedTemplate;  // interpreter.h

struct RenderLimits {
  size_t max_output_bytes = 4u << 20;
  int64_t max_loop_iterations = 1'000'000;  // summed over all loops of one render
};

class Template {
 public:
  static StatusOr<std::shared_ptr<const Template>> Parse(std::string_view source, const std::string& name);

  // context: a JSON object; its keys are top-level variables (messages, tools, add_generation_prompt,
  // bos_token, ...). JSON null is Python None.
  StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  StatusOr<std::string> Render(const nlohmann::ordered_json& context, const RenderLimits& limits) const;

  const std::string& name() const { return name_; }

  ~Template();

 private:
  Template() = default;
  std::string name_;
  std::unique_ptr<ParsedTemplate> parsed_;
};

}  // namespace shoal::jinja
