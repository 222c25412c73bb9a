// Chat prompts from a model's Jinja chat template, rendered as transformers'
// tokenizer.apply_chat_template(messages, tokenize=False, ...) renders them.
#pragma once

#include <string>

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

// Renders `messages` (an array of {role, content, ...}) with the variables transformers passes:
// messages, tools, documents (none), add_generation_prompt, bos_token, eos_token and the `extra` keys
// (which override the others, as keyword arguments do in transformers). Template errors, including
// raise_exception(), come back as InvalidArgument with the template's message.
StatusOr<std::string> RenderChatTemplate(const jinja::Template& t, const nlohmann::ordered_json& messages,
                                         const ChatTemplateOptions& o);

}  // namespace shoal
