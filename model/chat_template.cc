#include "model/chat_template.h"

#include "model/jinja/builtins.h"

namespace shoal {

bool IsReservedChatTemplateName(std::string_view name) {
  for (std::string_view r : kReservedChatTemplateNames) {
    if (name == r) return true;
  }
  // Covers a global added to the interpreter after the list above was written.
  return jinja::IsBuiltinGlobal(std::string(name));
}

StatusOr<std::string> RenderChatTemplate(const jinja::Template& t, const nlohmann::ordered_json& messages,
                                         const ChatTemplateOptions& o) {
  if (!messages.is_array()) return InvalidArgument(t.name() + ": messages must be a JSON array");
  if (!o.extra.is_null() && !o.extra.is_object()) {
    return InvalidArgument(t.name() + ": chat template kwargs must be a JSON object");
  }
  if (o.extra.is_object()) {
    for (auto it = o.extra.begin(); it != o.extra.end(); ++it) {
      if (IsReservedChatTemplateName(it.key())) {
        return InvalidArgument(t.name() + ": chat template kwarg '" + it.key() +
                               "' is reserved (the renderer sets it, or it names a built-in)");
      }
    }
  }
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  if (!o.bos_token.empty()) ctx["bos_token"] = o.bos_token;
  if (!o.eos_token.empty()) ctx["eos_token"] = o.eos_token;
  ctx["messages"] = messages;
  ctx["tools"] = o.tools;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = o.add_generation_prompt;
  if (o.extra.is_object()) {
    for (auto it = o.extra.begin(); it != o.extra.end(); ++it) ctx[it.key()] = it.value();
  }
  return t.Render(ctx);
}

}  // namespace shoal
