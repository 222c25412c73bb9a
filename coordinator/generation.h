// POST /v1/completions and /v1/chat/completions (internal to coordinator/).
//
// A request's path: the body is parsed, its chat template rendered and its prompt tokenized on the
// text pool; the control thread admits it (RequestTable::Admit: routing and the one fit check) and
// submits it to a rank; its tokens come back through the front end to the session's TokenStream,
// which detokenizes them and applies stop strings on the session's thread; the session writes them,
// one SSE chunk per batch of news, or one response at the end. Every rejection happens before a rank
// sees the request, so a client may retry any error response safely.
#pragma once

#include "coordinator/http_server.h"

namespace shoal::coord {

awaitable<bool> HandleCompletion(HandlerEnv& env, Exchange& x);
awaitable<bool> HandleChatCompletion(HandlerEnv& env, Exchange& x);

}  // namespace shoal::coord
