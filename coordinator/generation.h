// POST /v1/completions and /v1/chat/completions (internal to coordinator/).
#pragma once

#include "coordinator/http_util.h"
#include "coordinator/state.h"

namespace shoal::coord {

// Validates, tokenizes, routes and answers one generation request, streaming (SSE) or not. Every
// rejection happens before the request reaches a worker, so a client may retry any error response
// safely. Returns false when the connection must close.
awaitable<bool> HandleGeneration(Coordinator::Impl& c, beast::tcp_stream& stream, const Request& req, bool chat);

}  // namespace shoal::coord
