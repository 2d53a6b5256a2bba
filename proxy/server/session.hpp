// One downstream HTTP/1.1 connection (plain or TLS): reads each request head under its own
// deadline, validates framing before anything is forwarded, reads the bounded body, and hands
// the request to the forwarder. Keep-alive until the client, an error or a drain ends it.
#pragma once

#include "server/proxy_context.hpp"

#include <boost/asio/awaitable.hpp>

namespace coalescer::server {

template <class Stream>
boost::asio::awaitable<void> run_session(Stream& stream, worker& self, proxy_context& context);

}  // namespace coalescer::server
