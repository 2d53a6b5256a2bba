#include "coalesce/fetch.hpp"

#include "ops/errors.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <array>
#include <chrono>

namespace coalescer::coalesce {
namespace asio = boost::asio;
using boost::system::error_code;
using clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t read_chunk = 16 * 1024;

double seconds_since(clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
}

}  // namespace

asio::awaitable<void> fetch(std::shared_ptr<flight> flight, upstream::upstream_request request,
                            upstream::client& context) {
    const auto& up = context.upstream;
    const auto executor = co_await asio::this_coro::executor;
    const upstream::deadline total = clock::now() + up.timeouts.total;
    auto cancel = std::make_shared<upstream::exchange_cancel>();
    flight->set_canceller(
        [executor, cancel] { asio::post(executor, [cancel] { cancel->cancel(); }); });

    auto response = co_await upstream::open_response(request, context, total, cancel);
    flight->attempts.store(response.attempts, std::memory_order_relaxed);
    if (response.ec) {
        flight->fail(response.ec, response.retry_after_seconds);
        co_return;
    }
    auto& parser = *response.parser;
    // One read buffer for the whole body; each piece is stored at its own size (a 16 KiB string
    // shrunk with resize() would keep its capacity: wasted memory, miscounted cache bytes).
    std::array<char, read_chunk> buffer;
    error_code ec;
    // Body bytes that came with the head go out with it: one wake-up, one write per subscriber.
    std::size_t got = 0;
    if (!parser.is_done()) {
        got = upstream::parse_buffered_piece(response, buffer, ec);
    }
    flight->publish_head(std::move(response.head), !ec && (got != 0 || parser.is_done()));
    if (got != 0) {
        flight->append(std::string(buffer.data(), got), !ec && parser.is_done());
    }
    while (!ec && !parser.is_done()) {
        ec = co_await upstream::read_body_piece(response, buffer, got, up, total, *cancel);
        if (got != 0 && !cancel->cancelled) {
            // The last piece wakes no one: the completion (with the usage) follows at once, so
            // a subscriber never holds the whole body while its flight is still unfinished (its
            // client could leave in between and be counted as gone).
            flight->append(std::string(buffer.data(), got), !ec && parser.is_done());
        }
    }
    context.metrics.upstream_timing(context.upstream_index, response.ttfb,
                                    seconds_since(response.sent_at));
    if (ec) {
        upstream::note_protocol_error(context, ec);
        upstream::note_usage_cut(context, response);
        flight->fail(ec);  // subscribers cut their responses: never a silently short one
        co_return;
    }
    const auto body = flight->body();  // null when part of it was already freed
    const auto pieces =
        body ? std::span<const std::string_view>(*body) : std::span<const std::string_view>();
    if (auto usage = upstream::count_tokens(context, response, pieces, request.body)) {
        response.budget.settle(usage->total());
        flight->set_usage(std::move(*usage));
    }
    flight->complete();
    if (!cancel->cancelled) {
        upstream::release_connection(response, context);
    }
}

}  // namespace coalescer::coalesce
