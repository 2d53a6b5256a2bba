// The fixed pipeline for one validated request: route → key → coalesce (join or create a
// flight) → upstream fetch (leaders only) → delivery to this client → metrics and log.
#pragma once

#include "server/proxy_context.hpp"
#include "server/request_validator.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>

namespace coalescer::server {

// Answers `request` on `stream`. Returns true when the connection may carry another request.
template <class Stream>
boost::asio::awaitable<bool> forward(Stream& stream, net::socket_deadline& deadline,
                                     client_request& request, bool keep_alive, worker& self,
                                     proxy_context& context,
                                     std::chrono::steady_clock::time_point started);

}  // namespace coalescer::server
