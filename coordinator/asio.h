// The one place Asio and Beast are included. Boost 1.74's asio/awaitable.hpp uses std::exchange
// without including <utility>, so builds break depending on include order unless it comes first.
// These headers cost ~20 s of compile time per translation unit: only coordinator/*.cc include them.
#pragma once

#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace shoal::coord {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using boost::asio::awaitable;
using boost::asio::use_awaitable;

}  // namespace shoal::coord
