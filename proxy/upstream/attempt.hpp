// One attempt of an upstream exchange (exchange.hpp): a pooled or new connection, the request
// written, its head read with interim 1xx heads skipped, and the one resend that a reused
// connection's close allows. What clients are told of a failure is decided here, where it is
// known whether the request may have reached the provider.
#pragma once

#include "upstream/exchange.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <memory>

namespace coalescer::upstream {

struct attempt {
    boost::system::error_code ec;  // a proxy_errc
    std::unique_ptr<connection> conn;
    std::unique_ptr<response_parser> parser;  // parsers can't move
};

// Connects (or reuses a pooled connection), sends the request and reads the head. A pooled
// connection the upstream closed just as we reused it fails before any response byte; when
// that happens within the resend window the request could not have been processed, so it is
// sent once more on a new connection (and counted). A request the upstream held longer is
// never sent twice: its clients get the 502.
boost::asio::awaitable<attempt> try_once(const upstream_request& request, client& context,
                                         deadline total,
                                         const std::shared_ptr<exchange_cancel>& cancel);

}  // namespace coalescer::upstream
