// Pass and bypass: one client, one upstream exchange, nothing shared. The response goes
// straight from the upstream read buffer to the client's socket, without a flight: no body
// log, no second coroutine, no wake-ups. A client that hangs up takes its upstream call with it.
#pragma once

#include "coalesce/subscriber.hpp"
#include "net/deadline_sweep.hpp"
#include "upstream/exchange.hpp"

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <optional>
#include <string_view>

namespace coalescer::server {

struct relay_options {
    coalesce::role role = coalesce::role::pass;
    std::string_view exchange_id;  // shown as x-coalesce-flight and in the access log
    std::chrono::milliseconds write_timeout{30000};
    bool keep_alive = true;
    bool client_http11 = true;
    bool head_request = false;
    const std::atomic<bool>* draining = nullptr;  // a head written once set: Connection: close
};

struct relay_result {
    coalesce::delivery_result delivered;
    int attempts = 0;
    std::optional<ops::token_usage> usage;  // what the upstream call cost, when it said
};

template <class Stream>
boost::asio::awaitable<relay_result> relay(Stream& client, net::socket_deadline& deadline,
                                           upstream::upstream_request request,
                                           upstream::client& context, relay_options options);

}  // namespace coalescer::server
