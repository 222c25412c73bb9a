// The one place Asio and Beast are included. Boost 1.74's asio/awaitable.hpp uses std::exchange
// without including <utility>, so builds break depending on include order unless it comes first.
// These headers cost ~20 s of compile time per translation unit: only coordinator/*.cc include them.
#pragma once

#include <utility>

// Boost 1.74 enables co_await on clang only with libc++'s <experimental/coroutine>; clang with
// libstdc++'s <coroutine> (the fuzz build: Debian's clang 14) works the same way GCC does. Every
// Asio user includes this header, so the choice is the same in every translation unit.
#if defined(__clang__) && defined(__cpp_impl_coroutine) && __has_include(<coroutine>) && !defined(BOOST_ASIO_HAS_CO_AWAIT)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#define BOOST_ASIO_HAS_STD_COROUTINE 1
#endif

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
