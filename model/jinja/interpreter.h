// The tree-walking interpreter behind Template::Render.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "model/jinja/ast.h"
#include "model/jinja/template.h"

namespace shoal::jinja {

struct ParsedTemplate {
  Body body;
};

StatusOr<std::string> RenderTemplate(const ParsedTemplate& t, const std::string& name,
                                     const nlohmann::ordered_json& context, const RenderLimits& limits);

}  // namespace shoal::jinja
