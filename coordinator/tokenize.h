// vLLM's /tokenize, /detokenize and /version (internal to coordinator/; shapes in tokenize.cc).
#pragma once

#include "coordinator/http_server.h"

namespace shoal::coord {

awaitable<bool> HandleTokenize(HandlerEnv& env, Exchange& x);
awaitable<bool> HandleDetokenize(HandlerEnv& env, Exchange& x);
awaitable<bool> HandleVersion(HandlerEnv& env, Exchange& x);

}  // namespace shoal::coord
