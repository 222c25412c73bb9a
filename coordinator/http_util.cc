#include "coordinator/http_util.h"

namespace shoal::coord {

awaitable<bool> WriteResponse(beast::tcp_stream& stream, const Request& req, http::status status,
                              const char* content_type, std::string body,
                              const std::vector<std::pair<std::string, std::string>>& headers) {
  http::response<http::string_body> res{status, req.version()};
  res.set(http::field::server, "shoal");
  res.set(http::field::content_type, content_type);
  for (const auto& [k, v] : headers) res.set(k, v);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  boost::system::error_code ec;
  stream.expires_after(std::chrono::seconds(60));  // a client that stops reading must not hold the session
  co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
  stream.expires_never();
  co_return !ec;
}

awaitable<bool> WriteError(beast::tcp_stream& stream, const Request& req, const api::ApiError& e) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (e.http_status == 429 || e.http_status == 503) headers.emplace_back("Retry-After", "1");
  if (e.http_status == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
  std::string body = api::ErrorBody(e);
  co_return co_await WriteResponse(stream, req, static_cast<http::status>(e.http_status), "application/json",
                                   std::move(body), headers);
}

}  // namespace shoal::coord
