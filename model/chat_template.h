// Chat prompts from a model's Jinja chat template, rendered as transformers'
// tokenizer.apply_chat_template(messages, tokenize=False, ...) renders them.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "model/jinja/template.h"

namespace shoal {

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  // The tokenizer's special tokens; an empty string leaves the variable undefined, as transformers does
  // for a token the tokenizer does not have.
  std::string bos_token, eos_token;
  nlohmann::ordered_json tools;  // null = no tools (the template sees `tools` as none)
  nlohmann::ordered_json extra;  // chat_template_kwargs, e.g. {"enable_thinking": false}; an object or null
};

// Names a chat_template_kwargs key may not take. The first six are the variables the renderer sets:
// letting a kwarg replace them would bypass the API's validation of messages and tools, or forge the
// tokenizer's special tokens. The rest are the interpreter's global functions, which a context variable
// of the same name would shadow (a template's own raise_exception() check could be silenced).
inline constexpr std::string_view kReservedChatTemplateNames[] = {
    "messages", "tools",     "documents", "add_generation_prompt", "bos_token",      "eos_token",
    "range",    "namespace", "dict",      "strftime_now",          "raise_exception",
};
// True for kReservedChatTemplateNames and for any other global function the interpreter defines.
bool IsReservedChatTemplateName(std::string_view name);

// Renders `messages` (an array of {role, content, ...}) with the variables transformers passes:
// messages, tools, documents (none), add_generation_prompt, bos_token, eos_token, plus the `extra`
// keys. Unlike transformers, `extra` cannot override those or the interpreter's globals: a reserved key
// (IsReservedChatTemplateName) is InvalidArgument naming it. Template errors, including
// raise_exception(), come back as InvalidArgument with the template's message.
StatusOr<std::string> RenderChatTemplate(const jinja::Template& t, const nlohmann::ordered_json& messages,
                                         const ChatTemplateOptions& o);

}  // namespace shoal
