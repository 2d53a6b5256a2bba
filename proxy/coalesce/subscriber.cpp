#include "coalesce/subscriber.hpp"

#include "http/head_writer.hpp"
#include "http/header_rules.hpp"
#include "net/hangup_watch.hpp"
#include "net/socket_write.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <cstdio>

namespace coalescer::coalesce {
namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

namespace {

// One write carries at most this much, so write_timeout measures a client's progress rather
// than how long it takes to swallow a whole replayed body.
constexpr std::size_t max_chunks_per_write = 128;
constexpr std::size_t max_bytes_per_write = 256 * 1024;
// A client waiting longer than this for the flight's next bytes is watched for a hang-up.
constexpr std::chrono::milliseconds hangup_watch_delay{50};

// The safety net for a flight that never moves: a sweep task, so a parked subscriber's timer
// never expires and stays out of Asio's timer heap (with thousands of subscribers, re-arming
// and cancelling heap timers on every event cost a timerfd update each time the earliest moved).
class give_up_task final : public net::sweep_task {
  public:
    explicit give_up_task(std::shared_ptr<waiter> w) : waiter_(std::move(w)) {}
    bool due() const noexcept { return due_; }

  private:
    void on_due() override {
        due_ = true;
        waiter_->timer.cancel();
    }
    std::shared_ptr<waiter> waiter_;
    bool due_ = false;
};

template <class Stream>
asio::ip::tcp::socket& socket_of(Stream& stream) {
    return beast::get_lowest_layer(stream);
}

}  // namespace

template <class Stream>
asio::awaitable<delivery_result> deliver(Stream& stream, net::socket_deadline& deadline, flight& f,
                                         std::size_t slot, delivery_options options) {
    delivery_result result;
    auto parked = std::make_shared<waiter>(co_await asio::this_coro::executor);
    // The watch may fire after this delivery ended (its handler was already queued): it keeps
    // the waiter alive for that.
    auto watch = std::make_shared<net::hangup_watch>(deadline.sweep(), socket_of(stream),
                                                     [parked] { parked->timer.cancel(); });
    std::size_t cursor = 0;
    bool head_sent = false;
    bool chunked = false;
    bool has_body = true;
    std::string head_text;
    std::shared_ptr<const flight_head> head;  // keeps a viewed follower_text alive
    std::vector<std::array<char, 20>> chunk_sizes;
    std::vector<asio::const_buffer> buffers;
    give_up_task give_up(parked);
    deadline.sweep().schedule(give_up, clock::now() + options.max_wait);

    log_read r;  // reused: no allocation per wake-up
    for (;;) {
        f.read(slot, cursor, r);
        buffers.clear();
        chunk_sizes.clear();
        if (!head_sent && options.draining != nullptr &&
            options.draining->load(std::memory_order_relaxed)) {
            options.keep_alive = false;  // the drain began while this client waited
        }
        if (!head_sent) {
            if (r.head == nullptr && r.state == flight_state::failed) {
                // Failed before the head: every subscriber gets the same synthesized error.
                head_text =
                    ops::error_response(r.failure, options.keep_alive, options.head_request);
                result.status = ops::reply_for(r.failure).status;
                result.reusable = options.keep_alive && !ops::reply_for(r.failure).close_connection;
                result.answered = r.failure;
                result.body_bytes = ops::content_size(head_text);
                buffers.push_back(asio::buffer(head_text));
            } else if (r.head != nullptr) {
                has_body = r.head->has_body;
                const auto framing =
                    http::framing_for(*r.head, options.client_http11, options.keep_alive);
                chunked = framing.chunked;
                options.keep_alive = framing.keep_alive;
                std::optional<std::chrono::seconds> age;
                if (options.role == role::hit) {
                    age = std::chrono::duration_cast<std::chrono::seconds>(clock::now() -
                                                                           f.completed_at());
                }
                const bool usual =
                    options.role == role::follower && framing.keep_alive && options.client_http11;
                head = r.head;
                if (!usual) {
                    head_text = http::serialize_head(*r.head, ops::to_string(options.role), f.id(),
                                                     age, framing);
                }
                result.status = r.head->status;
                buffers.push_back(asio::buffer(usual ? head->follower_text : head_text));
            }
        }
        std::size_t take = 0;
        for (std::size_t bytes = 0;
             take < r.chunks.size() && take < max_chunks_per_write &&
             (take == 0 || bytes + r.chunks[take].size() <= max_bytes_per_write);
             ++take) {
            bytes += r.chunks[take].size();
        }
        if (has_body && (head_sent || r.head != nullptr)) {
            chunk_sizes.resize(take);
            for (std::size_t i = 0; i < take; ++i) {
                const auto chunk = r.chunks[i];
                if (chunked) {
                    const int n = std::snprintf(chunk_sizes[i].data(), chunk_sizes[i].size(),
                                                "%zx\r\n", chunk.size());
                    buffers.push_back(
                        asio::buffer(chunk_sizes[i].data(), static_cast<std::size_t>(n)));
                }
                buffers.push_back(asio::buffer(chunk));
                if (chunked) {
                    buffers.push_back(asio::buffer("\r\n", 2));
                }
                result.body_bytes += chunk.size();
            }
        }
        const bool caught_up = take == r.chunks.size();
        const bool ends_now =
            caught_up && r.state == flight_state::complete && (head_sent || r.head != nullptr);
        if (ends_now && chunked) {
            buffers.push_back(asio::buffer("0\r\n\r\n", 5));
        }
        const bool failed_early =
            !head_sent && r.head == nullptr && r.state == flight_state::failed;

        if (!buffers.empty()) {
            error_code ec;
            const auto sent = net::write_now(stream, buffers, ec);
            if (!ec && sent != asio::buffer_size(buffers)) {
                ec = co_await net::write_rest(stream, deadline, buffers, sent,
                                              options.write_timeout);
            }
            if (ec) {
                // A slow or vanished client is dropped alone.
                result.dropped_slow = ec == beast::error::timeout;
                result.client_gone = !result.dropped_slow;
                result.reusable = false;
                break;
            }
            if (!result.first_byte) {
                result.first_byte = clock::now();
            }
            head_sent = true;
            cursor += take;
        }
        if (failed_early) {
            break;
        }
        if (ends_now) {
            result.reusable = options.keep_alive;
            result.complete = true;
            break;
        }
        if (caught_up && r.state == flight_state::failed) {
            result.cut_by = r.failure;
            result.reusable = false;  // cut: no terminating chunk, the connection closes
            break;
        }
        if (!caught_up) {
            continue;
        }
        if (!f.park(cursor, parked)) {
            continue;
        }
        watch->arm_after(hangup_watch_delay);
        if (!give_up.due()) {
            parked->timer.expires_at(clock::time_point::max());  // woken by a cancel only
            co_await parked->timer.async_wait(use_tuple);
        }
        f.unpark(parked);
        if (watch->gone()) {
            result.client_gone = true;
            break;
        }
        if (give_up.due()) {
            // The flight did not move for max_wait: give up on it for this client.
            if (!head_sent) {
                const error_code failure = ops::proxy_errc::upstream_total_timeout;
                head_text = ops::error_response(failure, false, options.head_request);
                const asio::const_buffer text = asio::buffer(head_text);
                const auto wec =
                    co_await net::write_fully(stream, deadline, {&text, 1}, options.write_timeout);
                result.status = 504;
                result.answered = failure;
                result.body_bytes = wec ? 0 : ops::content_size(head_text);
            }
            break;
        }
    }
    watch->stop();
    co_return result;
}

template asio::awaitable<delivery_result> deliver(asio::ip::tcp::socket&, net::socket_deadline&,
                                                  flight&, std::size_t, delivery_options);
template asio::awaitable<delivery_result> deliver(beast::ssl_stream<asio::ip::tcp::socket>&,
                                                  net::socket_deadline&, flight&, std::size_t,
                                                  delivery_options);

}  // namespace coalescer::coalesce
