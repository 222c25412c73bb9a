// POST /v1/completions and /v1/chat/completions (internal to coordinator/).
//
// A request's path: the body is parsed, its chat template rendered and its prompt tokenized on the
// text pool; the control thread admits it (RequestTable::Admit: routing and the one fit check) and
// submits it to a rank; its tokens come back through the front end to the session's TokenStream,
// which detokenizes them and applies stop strings on the session's thread; the session writes them,
// one SSE chunk per batch of news, or one response at the end. Every rejection happens before a rank
// sees the request, so a client may retry any error response safely.
#pragma once

#include <variant>
#include <vector>

#include "coordinator/http_server.h"
#include "coordinator/openai_api.h"
#include "coordinator/served_model.h"

namespace shoal::coord {

// The prompt ids of a chat request: its messages through the model's chat template (tools and
// chat_template_kwargs passed on), tokenized without adding special tokens — what /v1/chat/completions
// and /tokenize both use. A 400 naming `messages` when the template raises or there is none.
std::variant<std::vector<int32_t>, api::ApiError> ChatPromptIds(const ServedModel& m, const api::ChatRequest& cr);

awaitable<bool> HandleCompletion(HandlerEnv& env, Exchange& x);
awaitable<bool> HandleChatCompletion(HandlerEnv& env, Exchange& x);

}  // namespace shoal::coord
