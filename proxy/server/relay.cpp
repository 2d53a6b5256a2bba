#include "server/relay.hpp"

#include "http/head_writer.hpp"
#include "net/hangup_watch.hpp"
#include "net/socket_write.hpp"
#include "ops/errors.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <charconv>

namespace coalescer::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
// Token usage is read from the response's own bytes; past this size it is not counted (as
// for a flight whose body was freed while it streamed).
constexpr std::size_t max_usage_scan = 1024 * 1024;
// Answers quicker than this never pay for watching the client (R-11 after that).
constexpr std::chrono::milliseconds hangup_watch_delay{50};

double seconds_since(clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
}

bool carries_usage(std::string_view content_type) {
    return content_type.find("json") != std::string_view::npos ||
           content_type.find("event-stream") != std::string_view::npos;
}

// The buffers of one client write: at most head, chunk size line, bytes, CRLF, last chunk.
class write_list {
  public:
    void add(std::string_view bytes) {
        if (!bytes.empty())
            buffers_[count_++] = asio::buffer(bytes.data(), bytes.size());
    }
    void add_chunk(std::string_view bytes) {
        const auto end = std::to_chars(size_line_.data(), size_line_.data() + 16, bytes.size(), 16);
        end.ptr[0] = '\r';
        end.ptr[1] = '\n';
        add({size_line_.data(), static_cast<std::size_t>(end.ptr + 2 - size_line_.data())});
        add(bytes);
        add("\r\n");
    }
    bool empty() const noexcept { return count_ == 0; }
    std::span<const asio::const_buffer> buffers() const noexcept {
        return {buffers_.data(), count_};
    }

  private:
    std::array<asio::const_buffer, 5> buffers_;
    std::size_t count_ = 0;
    std::array<char, 20> size_line_{};
};

// No head arrived: the client gets the same synthesized error a flight's subscribers would.
template <class Stream>
asio::awaitable<void> answer_failure(Stream& client, net::socket_deadline& deadline,
                                     error_code failure, const relay_options& options,
                                     coalesce::delivery_result& result) {
    const auto text = ops::error_response(failure, options.keep_alive, options.head_request);
    write_list list;
    list.add(text);
    const auto wec =
        co_await net::write_fully(client, deadline, list.buffers(), options.write_timeout);
    const auto reply = ops::reply_for(failure);
    result.status = reply.status;
    result.reusable = !wec && options.keep_alive && !reply.close_connection;
    result.client_gone = static_cast<bool>(wec);
    result.answered = failure;
    if (!wec) {
        result.first_byte = clock::now();
        result.body_bytes = ops::content_size(text);
    }
}

}  // namespace

template <class Stream>
asio::awaitable<relay_result> relay(Stream& client, net::socket_deadline& deadline,
                                    upstream::upstream_request request,
                                    upstream::exchange_context context, relay_options options) {
    relay_result out;
    auto& result = out.delivered;
    const auto& up = context.upstream;
    const auto total = clock::now() + up.timeouts.total;
    auto cancel = std::make_shared<upstream::exchange_cancel>();
    // The handler runs on this worker, like the exchange: no post needed.
    auto watch = std::make_shared<net::hangup_watch>(
        deadline.sweep(), beast::get_lowest_layer(client), [cancel] { cancel->cancel(); });
    watch->arm_after(hangup_watch_delay);

    auto response = co_await upstream::open_response(request, context, total, cancel);
    out.attempts = response.attempts;
    if (options.draining != nullptr && options.draining->load(std::memory_order_relaxed)) {
        options.keep_alive = false;  // the drain began while the upstream answered
    }
    if (response.ec) {
        watch->stop();
        if (watch->gone()) {
            result.client_gone = true;
        } else {
            co_await answer_failure(client, deadline, response.ec, options, result);
        }
        co_return out;
    }

    const auto framing =
        http::framing_for(response.head, options.client_http11, options.keep_alive);
    const auto head_text = http::serialize_head(response.head, ops::to_string(options.role),
                                                options.exchange_id, {}, framing);
    result.status = response.head.status;
    bool counting = carries_usage(response.content_type);
    std::string usage_text;
    std::array<char, read_chunk> buffer;
    bool head_written = false;
    error_code upstream_ec;
    for (;;) {
        std::size_t got = 0;
        if (response.head.has_body && !response.parser->is_done()) {
            upstream_ec =
                co_await upstream::read_body_piece(response, buffer, got, up, total, *cancel);
        }
        if (cancel->cancelled) {
            result.client_gone = true;  // the watch saw the client leave
            break;
        }
        const bool done = !upstream_ec && (!response.head.has_body || response.parser->is_done());
        const std::string_view piece(buffer.data(), got);
        write_list list;
        if (!head_written) {
            list.add(head_text);
        }
        if (framing.chunked && got != 0) {
            list.add_chunk(piece);
        } else {
            list.add(piece);
        }
        if (done && framing.chunked) {
            list.add("0\r\n\r\n");
        }
        if (!list.empty()) {
            error_code wec;
            const auto sent = net::write_now(client, list.buffers(), wec);
            if (!wec && sent != asio::buffer_size(list.buffers())) {
                wec = co_await net::write_rest(client, deadline, list.buffers(), sent,
                                               options.write_timeout);
            }
            if (wec) {
                result.dropped_slow = wec == beast::error::timeout;
                result.client_gone = !result.dropped_slow;
                break;
            }
            if (!result.first_byte) {
                result.first_byte = clock::now();
            }
            head_written = true;
            result.body_bytes += got;
        }
        if (counting && done && usage_text.empty()) {
            upstream::count_tokens(context, response.content_type, {&piece, 1});  // one piece
            counting = false;
        } else if (counting && usage_text.size() + got <= max_usage_scan) {
            usage_text.append(piece);
        } else {
            counting = false;
        }
        if (done) {
            result.complete = true;
            result.reusable = framing.keep_alive;
            break;
        }
        if (upstream_ec) {
            result.cut_by = upstream_ec;
            break;  // cut: no terminating chunk, the connection closes
        }
    }
    watch->stop();
    upstream::note_protocol_error(context, upstream_ec);
    context.metrics.upstream_timing(context.upstream_index, response.ttfb,
                                    seconds_since(response.sent_at));
    if (result.complete && counting) {
        const std::string_view whole(usage_text);
        upstream::count_tokens(context, response.content_type, {&whole, 1});
    }
    if (result.complete) {
        upstream::release_connection(response, context);
    }
    co_return out;
}

template asio::awaitable<relay_result> relay(asio::ip::tcp::socket&, net::socket_deadline&,
                                             upstream::upstream_request, upstream::exchange_context,
                                             relay_options);
template asio::awaitable<relay_result> relay(beast::ssl_stream<asio::ip::tcp::socket>&,
                                             net::socket_deadline&, upstream::upstream_request,
                                             upstream::exchange_context, relay_options);

}  // namespace coalescer::server
