// HTTP plumbing shared by the coordinator's endpoints (internal to coordinator/).
#pragma once

#include <string>
#include <vector>

#include "coordinator/asio.h"
#include "coordinator/openai_api.h"

namespace shoal::coord {

using Request = http::request<http::string_body>;

// Writes a whole response; false when the client is gone.
// content_type is a const char* so that call sites create no temporaries inside co_await expressions,
// which GCC 12 may destroy twice.
awaitable<bool> WriteResponse(beast::tcp_stream& stream, const Request& req, http::status status,
                              const char* content_type, std::string body,
                              const std::vector<std::pair<std::string, std::string>>& headers);
// An OpenAI-shaped error; 429 and 503 carry Retry-After so clients back off and retry safely.
awaitable<bool> WriteError(beast::tcp_stream& stream, const Request& req, const api::ApiError& e);

}  // namespace shoal::coord
